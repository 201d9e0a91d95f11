//! Headless Chromium for the report-page tests: load a page, dump its DOM after the scripts ran,
//! take a screenshot. Shared by `tests/html.rs` and `tests/scenarios.rs` (`#[path]` module).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one Chromium run may take.
const TIMEOUT: Duration = Duration::from_secs(90);

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Chromium binary; fails the test, naming the package, when there is none.
pub fn chromium() -> PathBuf {
    carousel::web::browser::chromium().unwrap_or_else(|why| {
        panic!(
            "this test needs headless Chromium: {why} (`sudo apt-get install -y chromium`; \
             ci/setup.sh installs it)"
        )
    })
}

/// What Chromium made of a page.
pub struct Rendered {
    /// The DOM after the page's scripts ran (`--dump-dom`).
    pub dom: String,
    /// Chromium's own log (stderr), which holds the page's console messages.
    pub log: String,
}

/// Runs headless Chromium on `page` with `extra` arguments; its stdout and stderr.
fn run(page: &Path, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let url = format!(
        "file://{}",
        page.canonicalize().expect("the page exists").display()
    );
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            // Root (CI containers) cannot use Chromium's sandbox.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    loop {
        if child
            .try_wait()
            .expect("chromium can be waited for")
            .is_some()
        {
            break;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// The DOM of `page` after its scripts ran, and Chromium's log.
pub fn render(page: &Path) -> Rendered {
    let (dom, log) = run(page, &["--dump-dom".to_string()]);
    Rendered { dom, log }
}

/// A screenshot of `page`, `width` × `height` pixels, into `png`.
pub fn screenshot(page: &Path, png: &Path, (width, height): (u32, u32)) {
    if let Some(parent) = png.parent() {
        std::fs::create_dir_all(parent).expect("the screenshot's directory");
    }
    let _ = std::fs::remove_file(png);
    let (_, log) = run(
        page,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            "--hide-scrollbars".to_string(),
        ],
    );
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes)\n{log}",
        png.display()
    );
}

/// The `data-records` of the chart figure `id` in a dumped DOM: how many items the page's
/// script drew into it.
pub fn chart_records(dom: &str, id: &str) -> Option<u64> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open = dom[..at].rfind('<')?;
    let close = at + dom[at..].find('>')?;
    let tag = &dom[open..close];
    let (_, rest) = tag.split_once("data-records=\"")?;
    rest.split('"').next()?.parse().ok()
}

/// Asserts the page rendered: its script marked it, it recorded no error, the browser logged no
/// uncaught error, and every chart figure in `charts` (ids) drew at least one item.
pub fn assert_rendered(rendered: &Rendered, charts: &[&str]) {
    let dom = &rendered.dom;
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "the page's script did not finish\n{}",
        rendered.log
    );
    assert!(
        dom.contains("id=\"page-errors\" data-count=\"0\"></ol>"),
        "the page recorded errors: {}",
        dom.split("id=\"page-errors\"")
            .nth(1)
            .unwrap_or("")
            .chars()
            .take(2_000)
            .collect::<String>()
    );
    for line in rendered.log.lines() {
        let console = line.contains("CONSOLE") || line.contains(":console");
        assert!(
            !(console && (line.contains("Uncaught") || line.contains("Error"))),
            "the browser logged an error: {line}"
        );
    }
    for id in charts {
        let drawn = chart_records(dom, id);
        assert!(
            drawn.is_some_and(|count| count > 0),
            "the chart #{id} drew {drawn:?} items"
        );
    }
}
