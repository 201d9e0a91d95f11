//! `carousel export TRACE --perfetto FILE`: a trace as Chrome trace-event JSON for
//! ui.perfetto.dev and chrome://tracing (the work is [`carousel_trace::render::perfetto`]'s).

use std::io::{self, Write};
use std::path::Path;

use carousel_trace::render::perfetto;

use super::report::load_trace;

/// `carousel export TRACE --perfetto FILE [--vm NAME]`; returns the exit code: 0, or 2 when the
/// trace cannot be read or holds nothing, or FILE cannot be written.
pub fn export_command(path: &Path, target: &Path, vm: Option<&str>) -> i32 {
    let model = match load_trace(path, vm, "export") {
        Ok(model) => model,
        Err(code) => return code,
    };
    let written = std::fs::File::create(target).and_then(|file| {
        let mut writer = io::BufWriter::new(file);
        let written = perfetto::write(&model, &mut writer)?;
        writer.flush()?;
        Ok(written)
    });
    match written {
        Ok(written) => {
            for note in &written.notes {
                eprintln!("note: {note}");
            }
            eprintln!(
                "carousel export: wrote {} ({} trace events; open it in ui.perfetto.dev or \
                 chrome://tracing)",
                target.display(),
                written.events
            );
            0
        }
        Err(error) => {
            eprintln!(
                "carousel export: cannot write {}: {error}",
                target.display()
            );
            2
        }
    }
}
