//! Lab templates: `[vm_defaults]` and `[[vm]] count = N`, made into one table per VM before the
//! per-VM checks of [`parse`](super::parse) see them.
//!
//! - `[vm_defaults]` holds any `[[vm]]` key but `name` and `count`; a VM takes each key its
//!   own table leaves out. `disk` and `blank_disk_kib` go together: a table that gives either
//!   takes neither from the defaults. So does the script: a table with `[[vm.script]]` steps
//!   (or `script = []`) runs those alone, none of the defaults' steps.
//! - `count = N` (1..=64) makes N VMs of one table; in VM `i` of them (0 to N − 1) every `{i}`
//!   in `name`, `args` and its script's `expect` and `send` reads `i`. A table without `count`
//!   makes one VM, with `{i}` = 0. With N > 1 the name must hold `{i}`, or the VMs would clash.
//! - `{i}` in `kernel` or `disk` is an error: those name one file for every VM.
//!
//! Each table this makes knows where its keys came from, so that an error names the key as the
//! file writes it (`vm[1].args`, `vm_defaults.kernel`) and the VM with its origin
//! (`"xv6-3" (from [[vm]] 1, count 4)`).

use toml::Spanned;

use super::checker::Checker;
use super::error::{LabError, LabErrorKind, Template, VmRef};
use super::limits::VM_COUNT_RANGE;
use super::raw::{RawStep, RawVm};

/// What a template's text writes for the index of the VM.
pub const INDEX: &str = "{i}";

/// One VM's table after templates: the keys the per-VM checks read, and where each came from.
#[derive(Debug, Clone)]
pub(super) struct VmTable {
    pub(super) name: Spanned<String>,
    pub(super) kernel: Spanned<String>,
    pub(super) memory_mib: Spanned<i64>,
    pub(super) disk: Option<Spanned<String>>,
    pub(super) blank_disk_kib: Option<Spanned<i64>>,
    pub(super) persist: Option<Spanned<bool>>,
    pub(super) weight: Option<Spanned<i64>>,
    pub(super) cap_pct: Option<Spanned<i64>>,
    pub(super) disk_weight: Option<Spanned<i64>>,
    pub(super) disk_mib_per_s: Option<Spanned<i64>>,
    pub(super) balloon_mib: Option<Spanned<i64>>,
    pub(super) balloon_target_mib: Option<Spanned<i64>>,
    pub(super) args: Option<Spanned<String>>,
    pub(super) script: Vec<Spanned<RawStep>>,
    /// The `[[vm]]` table's index among the file's.
    pub(super) table: usize,
    /// The table's `count`, when it has one.
    pub(super) template: Option<Template>,
    /// The keys this VM took from `[vm_defaults]`.
    inherited: Vec<&'static str>,
}

impl VmTable {
    /// Where this VM's key `field` (`kernel`, `script[2].expect`) is written: `vm[K].field`,
    /// or `vm_defaults.field` for one it took from the defaults.
    pub(super) fn key(&self, field: &str) -> String {
        if self.inherits(field) {
            format!("vm_defaults.{field}")
        } else {
            format!("vm[{}].{field}", self.table)
        }
    }

    /// True when `field` (or the key it is part of: `script` for `script[2].expect`) came from
    /// `[vm_defaults]`.
    fn inherits(&self, field: &str) -> bool {
        let top = field.split(['.', '[']).next().unwrap_or(field);
        self.inherited.contains(&top)
    }

    /// The VM, as errors name it.
    pub(super) fn vm(&self) -> VmRef {
        VmRef {
            name: self.name.get_ref().clone(),
            template: self.template,
        }
    }

    /// The VM, for a message about `field` that would not name it otherwise: when the key is
    /// not this VM's alone (a template's, or the defaults').
    pub(super) fn context(&self, field: &str) -> Option<VmRef> {
        (self.template.is_some() || self.inherits(field)).then(|| self.vm())
    }

    /// VM `index` of the template: `{i}` replaced where it may stand.
    fn copy(&self, index: usize) -> VmTable {
        let number = index.to_string();
        let put = |value: &Spanned<String>| {
            Spanned::new(value.span(), value.get_ref().replace(INDEX, &number))
        };
        let script = self
            .script
            .iter()
            .map(|step| {
                // Every key of a step, so that a new one has to say whether it takes `{i}`.
                let RawStep {
                    expect,
                    send,
                    timeout_s,
                    label,
                    repeat,
                } = step.get_ref();
                let step_copy = RawStep {
                    expect: put(expect),
                    send: send.as_ref().map(put),
                    timeout_s: timeout_s.clone(),
                    label: label.as_ref().map(put),
                    repeat: repeat.clone(),
                };
                Spanned::new(step.span(), step_copy)
            })
            .collect();
        VmTable {
            name: put(&self.name),
            args: self.args.as_ref().map(put),
            script,
            ..self.clone()
        }
    }

    /// `{i}` only where it may stand, and in the name when the table makes several VMs.
    fn check_index(&self, checker: &Checker<'_>) -> Result<(), LabError> {
        for (field, value) in [("kernel", Some(&self.kernel)), ("disk", self.disk.as_ref())] {
            if let Some(value) = value.filter(|value| value.get_ref().contains(INDEX)) {
                return Err(checker.error(
                    Some(value.span()),
                    LabErrorKind::IndexNotTaken {
                        key: self.key(field),
                        value: value.get_ref().clone(),
                    },
                ));
            }
        }
        match self.template {
            Some(Template { count, .. }) if count > 1 && !self.name.get_ref().contains(INDEX) => {
                Err(checker.error(
                    Some(self.name.span()),
                    LabErrorKind::NameWithoutIndex {
                        key: self.key("name"),
                        value: self.name.get_ref().clone(),
                        count,
                    },
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The lab's VMs, one table each, in file order: `[vm_defaults]` filled in, every `count`
/// made into that many VMs, `{i}` replaced. Refuses a bad `count`, more VMs than a lab may
/// have, a missing `name`, `kernel` or `memory_mib`, `{i}` where it may not stand, and
/// `name` or `count` in the defaults.
pub(super) fn expand(
    checker: &Checker<'_>,
    tables: &[Spanned<RawVm>],
    defaults: Option<&RawVm>,
) -> Result<Vec<VmTable>, LabError> {
    let none = RawVm::default();
    let defaults = match defaults {
        Some(defaults) => {
            check_defaults(checker, defaults)?;
            defaults
        }
        None => &none,
    };
    let counts = tables
        .iter()
        .enumerate()
        .map(|(index, table)| count(checker, index, table.get_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let total = check_total(checker, tables, &counts)?;
    let mut vms = Vec::with_capacity(total);
    for (index, (table, count)) in tables.iter().zip(counts).enumerate() {
        let template = merge(checker, index, table, defaults, count)?;
        template.check_index(checker)?;
        vms.extend((0..count.unwrap_or(1)).map(|i| template.copy(i)));
    }
    Ok(vms)
}

/// `[vm_defaults]` may hold any key of a VM but the two that belong to one table.
fn check_defaults(checker: &Checker<'_>, defaults: &RawVm) -> Result<(), LabError> {
    let refuse = |span, key: &str, reason| {
        Err(checker.error(
            Some(span),
            LabErrorKind::NotADefault {
                key: key.to_string(),
                reason,
            },
        ))
    };
    if let Some(name) = &defaults.name {
        return refuse(
            name.span(),
            "vm_defaults.name",
            "each [[vm]] table names its own VMs (several with `count` and `{i}`)",
        );
    }
    if let Some(count) = &defaults.count {
        return refuse(
            count.span(),
            "vm_defaults.count",
            "`count` belongs in a [[vm]] table: it makes that many VMs of the table",
        );
    }
    Ok(())
}

/// Table `index`'s `count`, if it has one: a whole number in 1..=64.
fn count(checker: &Checker<'_>, index: usize, table: &RawVm) -> Result<Option<usize>, LabError> {
    let Some(value) = &table.count else {
        return Ok(None);
    };
    let key = format!("vm[{index}].count");
    let range = *VM_COUNT_RANGE.start() as i64..=*VM_COUNT_RANGE.end() as i64;
    let kind = match value.get_ref() {
        toml::Value::Integer(count) if range.contains(count) => return Ok(Some(*count as usize)),
        toml::Value::Integer(count) => LabErrorKind::OutOfRange {
            key,
            value: *count,
            range,
            vm: None,
        },
        other => LabErrorKind::BadCount {
            key,
            value: other.to_string(),
        },
    };
    Err(checker.error(Some(value.span()), kind))
}

/// The number of VMs the tables make, if a lab may have that many. The error points at the
/// table that goes over (its `count` when it has one).
fn check_total(
    checker: &Checker<'_>,
    tables: &[Spanned<RawVm>],
    counts: &[Option<usize>],
) -> Result<usize, LabError> {
    let total: usize = counts.iter().map(|count| count.unwrap_or(1)).sum();
    if VM_COUNT_RANGE.contains(&total) {
        return Ok(total);
    }
    if counts.iter().all(Option::is_none) {
        // No templates: as many VMs as tables, refused as before.
        let span = tables.get(*VM_COUNT_RANGE.end()).map(Spanned::span);
        return Err(checker.error(span, LabErrorKind::VmCount { count: total }));
    }
    let mut made = 0;
    let over = counts
        .iter()
        .position(|count| {
            made += count.unwrap_or(1);
            made > *VM_COUNT_RANGE.end()
        })
        .expect("the counts add up to more than the limit");
    let (key, span) = match &tables[over].get_ref().count {
        Some(count) => (format!("vm[{over}].count"), count.span()),
        None => (format!("vm[{over}]"), tables[over].span()),
    };
    Err(checker.error(Some(span), LabErrorKind::TooManyVms { key, count: total }))
}

/// Table `index` with the defaults filled in (its `{i}` not yet replaced).
fn merge(
    checker: &Checker<'_>,
    index: usize,
    table: &Spanned<RawVm>,
    defaults: &RawVm,
    count: Option<usize>,
) -> Result<VmTable, LabError> {
    // Every key of a table, so that a new one has to say how it is inherited.
    let RawVm {
        name,
        count: _,
        kernel,
        memory_mib,
        disk,
        blank_disk_kib,
        persist,
        weight,
        cap_pct,
        disk_weight,
        disk_mib_per_s,
        balloon_mib,
        balloon_target_mib,
        args,
        script,
    } = table.get_ref().clone();
    let mut inherited = Vec::new();
    let mut inherit = Inherit(&mut inherited);
    let kernel = inherit.take(kernel, &defaults.kernel, "kernel");
    let memory_mib = inherit.take(memory_mib, &defaults.memory_mib, "memory_mib");
    let persist = inherit.take(persist, &defaults.persist, "persist");
    let weight = inherit.take(weight, &defaults.weight, "weight");
    let cap_pct = inherit.take(cap_pct, &defaults.cap_pct, "cap_pct");
    let disk_weight = inherit.take(disk_weight, &defaults.disk_weight, "disk_weight");
    let disk_mib_per_s = inherit.take(disk_mib_per_s, &defaults.disk_mib_per_s, "disk_mib_per_s");
    let balloon_mib = inherit.take(balloon_mib, &defaults.balloon_mib, "balloon_mib");
    let balloon_target_mib = inherit.take(
        balloon_target_mib,
        &defaults.balloon_target_mib,
        "balloon_target_mib",
    );
    let args = inherit.take(args, &defaults.args, "args");
    let script = inherit
        .take(script, &defaults.script, "script")
        .unwrap_or_default();
    // One disk or the other: a table that gives either takes neither from the defaults.
    let (disk, blank_disk_kib) = if disk.is_none() && blank_disk_kib.is_none() {
        (
            inherit.take(None, &defaults.disk, "disk"),
            inherit.take(None, &defaults.blank_disk_kib, "blank_disk_kib"),
        )
    } else {
        (disk, blank_disk_kib)
    };
    let missing = |key: &str, reason| {
        checker.error(
            Some(table.span()),
            LabErrorKind::MissingKey {
                key: format!("vm[{index}].{key}"),
                reason,
            },
        )
    };
    let name = name.ok_or_else(|| missing("name", "every [[vm]] table names its VMs"))?;
    let kernel = kernel.ok_or_else(|| {
        missing(
            "kernel",
            "every VM needs one, from its [[vm]] table or from [vm_defaults]",
        )
    })?;
    let memory_mib = memory_mib.ok_or_else(|| {
        missing(
            "memory_mib",
            "every VM needs it, from its [[vm]] table or from [vm_defaults]",
        )
    })?;
    Ok(VmTable {
        name,
        kernel,
        memory_mib,
        disk,
        blank_disk_kib,
        persist,
        weight,
        cap_pct,
        disk_weight,
        disk_mib_per_s,
        balloon_mib,
        balloon_target_mib,
        args,
        script,
        table: index,
        template: count.map(|count| Template {
            table: index,
            count,
        }),
        inherited,
    })
}

/// Fills in what a table leaves out from the defaults, and notes which keys it took.
struct Inherit<'a>(&'a mut Vec<&'static str>);

impl Inherit<'_> {
    /// `own`, or else the defaults' `default` (noted as inherited under `key`).
    fn take<T: Clone>(
        &mut self,
        own: Option<T>,
        default: &Option<T>,
        key: &'static str,
    ) -> Option<T> {
        own.or_else(|| {
            if default.is_some() {
                self.0.push(key);
            }
            default.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::raw::RawLab;

    /// The tables `text`'s templates make, or the error's text.
    fn expand_text(text: &str) -> Result<Vec<VmTable>, String> {
        let raw: RawLab = toml::from_str(text).map_err(|error| error.to_string())?;
        let checker = Checker::for_text(text);
        expand(&checker, &raw.vm, raw.vm_defaults.as_ref()).map_err(|error| error.to_string())
    }

    fn refused(text: &str) -> String {
        match expand_text(text) {
            Ok(vms) => panic!("accepted: {vms:?}"),
            Err(error) => error,
        }
    }

    fn names(vms: &[VmTable]) -> Vec<&str> {
        vms.iter().map(|vm| vm.name.get_ref().as_str()).collect()
    }

    /// The line of `value`'s first character in `text`.
    fn line(text: &str, value: &Spanned<String>) -> usize {
        text[..value.span().start].lines().count()
    }

    const SPIN: &str = "kernel = \"spin\"\nmemory_mib = 4\n";

    #[test]
    fn a_count_makes_that_many_vms_with_their_index() {
        let text = format!(
            "[[vm]]\nname = \"a\"\n{SPIN}\n\
             [[vm]]\nname = \"s{{i}}\"\ncount = 3\n{SPIN}args = \"id={{i}} of={{i}}{{i}}\"\n\
             [[vm.script]]\nexpect = 'vm {{i}} ready'\nsend = \"go {{i}}\\n\"\ntimeout_s = 5\n\
             label = 'go {{i}}'\nrepeat = 2\n\
             [[vm.script]]\nexpect = 'done'\n\
             [[vm]]\nname = \"z\"\n{SPIN}"
        );
        let vms = expand_text(&text).unwrap();
        assert_eq!(names(&vms), ["a", "s0", "s1", "s2", "z"]);
        for (i, vm) in vms[1..4].iter().enumerate() {
            assert_eq!(vm.table, 1);
            assert_eq!(vm.template, Some(Template { table: 1, count: 3 }));
            assert_eq!(
                vm.args.as_ref().unwrap().get_ref(),
                &format!("id={i} of={i}{i}")
            );
            let step = vm.script[0].get_ref();
            assert_eq!(step.expect.get_ref(), &format!("vm {i} ready"));
            assert_eq!(step.send.as_ref().unwrap().get_ref(), &format!("go {i}\n"));
            assert_eq!(*step.timeout_s.as_ref().unwrap().get_ref(), 5);
            assert_eq!(step.label.as_ref().unwrap().get_ref(), &format!("go {i}"));
            assert_eq!(*step.repeat.as_ref().unwrap().get_ref(), 2);
            assert_eq!(vm.script[1].get_ref().expect.get_ref(), "done");
            assert_eq!(vm.kernel.get_ref(), "spin");
            // A copy's values point at the template's text.
            assert_eq!(line(&text, &vm.name), 7);
            assert_eq!(line(&text, &step.expect), 13);
            assert_eq!(vm.key("args"), "vm[1].args");
            assert_eq!(
                vm.vm().to_string(),
                format!("\"s{i}\" (from [[vm]] 1, count 3)")
            );
        }
        assert_eq!(vms[4].table, 2);
        assert_eq!(vms[4].template, None);
        assert_eq!(vms[4].vm().to_string(), "\"z\"");
        assert_eq!(vms[4].context("weight"), None);
        assert!(vms[1].context("weight").is_some());
    }

    #[test]
    fn without_count_a_table_is_one_vm_and_index_0() {
        let vms = expand_text(&format!(
            "[[vm]]\nname = \"x{{i}}\"\n{SPIN}args = \"{{i}}\"\n"
        ))
        .unwrap();
        assert_eq!(names(&vms), ["x0"]);
        assert_eq!(vms[0].args.as_ref().unwrap().get_ref(), "0");
        assert_eq!(vms[0].template, None);
        // count = 1 is a template of one: its VM says where it came from.
        let vms = expand_text(&format!("[[vm]]\nname = \"one\"\ncount = 1\n{SPIN}")).unwrap();
        assert_eq!(names(&vms), ["one"]);
        assert_eq!(vms[0].template, Some(Template { table: 0, count: 1 }));
        // Only `{i}` is an index; other braces stay.
        let vms = expand_text(&format!(
            "[[vm]]\nname = \"b\"\n{SPIN}args = \"{{j}} {{}} {{ i}}\"\n"
        ))
        .unwrap();
        assert_eq!(vms[0].args.as_ref().unwrap().get_ref(), "{j} {} { i}");
    }

    #[test]
    fn vms_inherit_the_defaults_and_their_own_keys_win() {
        let text = "[vm_defaults]\nkernel = \"spin\"\nmemory_mib = 8\nweight = 2\n\
                    args = \"ms={i}\"\nballoon_mib = 1\n\
                    [[vm]]\nname = \"a\"\n\
                    [[vm]]\nname = \"b{i}\"\ncount = 2\nweight = 5\nmemory_mib = 16\n\
                    args = \"own\"\n";
        let vms = expand_text(text).unwrap();
        assert_eq!(names(&vms), ["a", "b0", "b1"]);
        let a = &vms[0];
        assert_eq!(
            (a.kernel.get_ref().as_str(), *a.memory_mib.get_ref()),
            ("spin", 8)
        );
        assert_eq!(*a.weight.as_ref().unwrap().get_ref(), 2);
        assert_eq!(
            a.args.as_ref().unwrap().get_ref(),
            "ms=0",
            "{{i}} in a default"
        );
        assert_eq!(*a.balloon_mib.as_ref().unwrap().get_ref(), 1);
        assert_eq!(a.key("kernel"), "vm_defaults.kernel");
        assert_eq!(a.key("weight"), "vm_defaults.weight");
        assert_eq!(a.key("name"), "vm[0].name");
        assert_eq!(a.key("persist"), "vm[0].persist", "given by neither");
        // A key the VM took from the defaults is not its alone: errors name the VM.
        assert_eq!(a.context("weight").unwrap().to_string(), "\"a\"");
        assert_eq!(a.context("name"), None);
        for b in &vms[1..] {
            assert_eq!(*b.weight.as_ref().unwrap().get_ref(), 5);
            assert_eq!(*b.memory_mib.get_ref(), 16);
            assert_eq!(b.args.as_ref().unwrap().get_ref(), "own");
            assert_eq!(b.kernel.get_ref(), "spin");
            assert_eq!(b.key("weight"), "vm[1].weight");
            assert_eq!(b.key("kernel"), "vm_defaults.kernel");
            assert_eq!(*b.balloon_mib.as_ref().unwrap().get_ref(), 1);
        }
    }

    #[test]
    fn a_vms_own_script_replaces_the_defaults() {
        let text = "[vm_defaults]\nkernel = \"spin\"\nmemory_mib = 4\n\
                    [[vm_defaults.script]]\nexpect = 'ready {i}'\nsend = \"a{i}\"\n\
                    [[vm_defaults.script]]\nexpect = 'done'\n\
                    [[vm]]\nname = \"d{i}\"\ncount = 2\n\
                    [[vm]]\nname = \"own\"\n[[vm.script]]\nexpect = 'mine'\n\
                    [[vm]]\nname = \"none\"\nscript = []\n";
        let vms = expand_text(text).unwrap();
        assert_eq!(names(&vms), ["d0", "d1", "own", "none"]);
        for (i, vm) in vms[..2].iter().enumerate() {
            assert_eq!(vm.script.len(), 2);
            let step = vm.script[0].get_ref();
            assert_eq!(step.expect.get_ref(), &format!("ready {i}"));
            assert_eq!(step.send.as_ref().unwrap().get_ref(), &format!("a{i}"));
            assert_eq!(vm.key("script[1].expect"), "vm_defaults.script[1].expect");
        }
        assert_eq!(vms[2].script.len(), 1);
        assert_eq!(vms[2].script[0].get_ref().expect.get_ref(), "mine");
        assert_eq!(vms[2].key("script[0].expect"), "vm[1].script[0].expect");
        assert!(vms[3].script.is_empty(), "script = [] runs no script");
    }

    #[test]
    fn disk_and_blank_disk_are_inherited_together() {
        let text = "[vm_defaults]\nkernel = \"spin\"\nmemory_mib = 4\ndisk = \"fs.img\"\n\
                    [[vm]]\nname = \"file\"\n\
                    [[vm]]\nname = \"blank\"\nblank_disk_kib = 64\n";
        let vms = expand_text(text).unwrap();
        assert_eq!(vms[0].disk.as_ref().unwrap().get_ref(), "fs.img");
        assert_eq!(vms[0].key("disk"), "vm_defaults.disk");
        assert!(
            vms[1].disk.is_none(),
            "its own blank disk, not also the image"
        );
        assert_eq!(*vms[1].blank_disk_kib.as_ref().unwrap().get_ref(), 64);
        let text = "[vm_defaults]\nkernel = \"spin\"\nmemory_mib = 4\nblank_disk_kib = 8\n\
                    [[vm]]\nname = \"file\"\ndisk = \"fs.img\"\n";
        let vms = expand_text(text).unwrap();
        assert!(vms[0].blank_disk_kib.is_none());
    }

    #[test]
    fn bad_counts_are_named() {
        for (value, says) in [
            ("0", "outside the allowed range 1..=64"),
            ("-3", "outside the allowed range 1..=64"),
            ("65", "outside the allowed range 1..=64"),
            ("1_000_000_000_000", "outside the allowed range 1..=64"),
            ("\"4\"", "a count is a whole number of VMs, 1..=64"),
            ("4.0", "a count is a whole number of VMs"),
            ("true", "a count is a whole number of VMs"),
            ("[4]", "a count is a whole number of VMs"),
        ] {
            let text = format!(
                "[[vm]]\nname = \"a\"\n{SPIN}[[vm]]\nname = \"b{{i}}\"\n{SPIN}count = {value}\n"
            );
            let error = refused(&text);
            assert!(error.contains("`vm[1].count`"), "{value}: {error}");
            assert!(error.contains(says), "{value}: {error}");
            assert!(error.contains("lab.toml:9: "), "{value}: {error}");
        }
    }

    #[test]
    fn a_lab_makes_at_most_64_vms() {
        let table =
            |count: usize| format!("[[vm]]\nname = \"v{count}-{{i}}\"\n{SPIN}count = {count}\n");
        assert_eq!(
            expand_text(&format!("{}{}", table(40), table(24)))
                .unwrap()
                .len(),
            64
        );
        let error = refused(&format!("{}{}{}", table(40), table(30), table(1)));
        assert!(
            error.contains("`vm[1].count`")
                && error.contains("make 71 VMs")
                && error.contains("at most 64"),
            "{error}"
        );
        assert!(error.contains("lab.toml:10: "), "{error}");
        // A table without a count that goes over is named as a table.
        let error = refused(&format!("{}[[vm]]\nname = \"last\"\n{SPIN}", table(64)));
        assert!(
            error.contains("`vm[1]`") && error.contains("make 65 VMs"),
            "{error}"
        );
        // Without templates the message is the one it always was.
        let plain: String = (0..65)
            .map(|i| format!("[[vm]]\nname = \"p{i}\"\n{SPIN}"))
            .collect();
        let error = refused(&plain);
        assert!(error.contains("the lab has 65 [[vm]] tables"), "{error}");
        let error = refused("[run]\nquantum_us = 5\n");
        assert!(error.contains("the lab has 0 [[vm]] tables"), "{error}");
    }

    #[test]
    fn index_only_where_it_stands_for_something() {
        for (extra, key, value) in [
            (
                "kernel = \"k{i}.elf\"\nmemory_mib = 4\n",
                "vm[0].kernel",
                "k{i}.elf",
            ),
            (
                "kernel = \"spin\"\nmemory_mib = 4\ndisk = \"fs{i}.img\"\n",
                "vm[0].disk",
                "fs{i}.img",
            ),
        ] {
            for count in ["", "count = 2\n"] {
                let error = refused(&format!("[[vm]]\nname = \"v{{i}}\"\n{count}{extra}"));
                assert!(error.contains(&format!("`{key}` = {value:?}")), "{error}");
                assert!(error.contains("only in `name`, `args` and"), "{error}");
            }
        }
        let error = refused(
            "[vm_defaults]\nkernel = \"${XV6}/{i}\"\n[[vm]]\nname = \"a\"\nmemory_mib = 4\n",
        );
        assert!(error.contains("`vm_defaults.kernel`"), "{error}");
        assert!(error.contains("lab.toml:2: "), "{error}");
    }

    #[test]
    fn several_vms_of_a_table_need_the_index_in_their_name() {
        let error = refused(&format!("[[vm]]\nname = \"xv6\"\ncount = 4\n{SPIN}"));
        assert!(
            error.contains("`vm[0].name` = \"xv6\"")
                && error.contains("count = 4")
                && error.contains("{i}")
                && error.contains("0 to 3"),
            "{error}"
        );
        assert!(error.contains("lab.toml:2: "), "{error}");
        assert!(expand_text(&format!("[[vm]]\nname = \"xv6\"\ncount = 1\n{SPIN}")).is_ok());
    }

    #[test]
    fn defaults_have_no_name_and_no_count() {
        let error = refused(&format!(
            "[vm_defaults]\nname = \"x{{i}}\"\n[[vm]]\nname = \"a\"\n{SPIN}"
        ));
        assert!(error.contains("`vm_defaults.name`"), "{error}");
        let error = refused(&format!(
            "[vm_defaults]\ncount = 2\n[[vm]]\nname = \"a{{i}}\"\n{SPIN}"
        ));
        assert!(error.contains("`vm_defaults.count`"), "{error}");
        assert!(error.contains("lab.toml:2: "), "{error}");
        let error = refused(&format!(
            "[vm_defaults]\ncolour = 2\n[[vm]]\nname = \"a\"\n{SPIN}"
        ));
        assert!(error.contains("colour"), "{error}");
    }

    #[test]
    fn missing_keys_are_named() {
        let error = refused("[[vm]]\nkernel = \"spin\"\nmemory_mib = 4\n");
        assert!(error.contains("`vm[0].name` is missing"), "{error}");
        let error = refused(
            "[[vm]]\nname = \"a\"\nmemory_mib = 4\n[[vm]]\nname = \"b\"\nkernel = \"spin\"\n",
        );
        assert!(error.contains("`vm[0].kernel` is missing"), "{error}");
        assert!(error.contains("[vm_defaults]"), "{error}");
        let error = refused("[vm_defaults]\nkernel = \"spin\"\n[[vm]]\nname = \"a\"\n");
        assert!(error.contains("`vm[0].memory_mib` is missing"), "{error}");
        assert!(error.contains("lab.toml:3: "), "{error}");
    }
}
