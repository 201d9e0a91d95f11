//! The axes of a sweep and the configurations they span: quanta, scheduling policies, weight
//! sets and workloads, parsed from the command line (`--quantum 500us,1ms`) or a lab file's
//! `[sweep]` table, and turned into one [`Lab`] per configuration.
//!
//! What is here: the parsers (each error names what it could not read and what it expects), the
//! plan ([`Axes::configurations`]) and the configuration's run directory name ([`Config::id`]).
//! What is not: running anything, or reading lab files (the lab module calls the parsers for
//! `[sweep]`).

use carousel_protocol::config::SchedulerPolicy;
use serde::{Deserialize, Serialize};

use crate::lab::sweep::{quantum_text, WeightSet, Workload, LAB_WEIGHTS};
use crate::lab::Lab;

/// The workload of every VM, when the lab defines none.
pub const ALL_VMS: &str = "all";
/// Most configurations one sweep runs (repeats included): a guard against a typo that would
/// start thousands of emulators.
pub const MAX_RUNS: usize = 1000;

/// Gives `lab`'s VMs (those of the configuration's workload) the weights of `set`.
pub fn apply_weights(set: &WeightSet, lab: &mut Lab) -> Result<(), String> {
    match set {
        WeightSet::Lab => Ok(()),
        WeightSet::Positional(weights) => {
            if weights.len() != lab.vms.len() {
                return Err(format!(
                    "weight set {} has {} weights, but the run has {} VMs ({})",
                    set.label(),
                    weights.len(),
                    lab.vms.len(),
                    lab.vms
                        .iter()
                        .map(|vm| vm.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            for (vm, &weight) in lab.vms.iter_mut().zip(weights) {
                vm.weight = weight;
            }
            Ok(())
        }
        WeightSet::Named(pairs) => {
            // A name outside this workload is fine (the set may serve several workloads);
            // one outside the lab was refused when the set was checked against the lab.
            for (name, weight) in pairs {
                if let Some(vm) = lab.vms.iter_mut().find(|vm| &vm.name == name) {
                    vm.weight = *weight;
                }
            }
            Ok(())
        }
    }
}

/// Every axis of a sweep, as the command line and the lab's `[sweep]` table settle them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Axes {
    pub workloads: Vec<Workload>,
    pub weights: Vec<WeightSet>,
    pub policies: Vec<SchedulerPolicy>,
    /// Ascending.
    pub quanta_us: Vec<u32>,
    pub repeat: u32,
}

/// One run of a sweep: a point on every axis, and which repetition it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub workload: String,
    /// The weight set's label ([`WeightSet::label`]).
    pub weights: String,
    /// The policy's name.
    pub policy: String,
    pub quantum_us: u32,
    /// 1-based.
    pub repeat: u32,
}

impl Config {
    /// The run's directory name: every axis, in a form safe in file names and shell words.
    pub fn id(&self) -> String {
        let weights: String = self
            .weights
            .chars()
            .map(|c| if c == ':' { '_' } else { c })
            .collect();
        format!(
            "{}.{}.w-{weights}.q{}.r{}",
            self.workload,
            self.policy,
            quantum_text(self.quantum_us),
            self.repeat
        )
    }

    /// The configuration without its repetition: what a summary row stands for.
    pub fn point(&self) -> Point {
        Point {
            workload: self.workload.clone(),
            weights: self.weights.clone(),
            policy: self.policy.clone(),
            quantum_us: self.quantum_us,
        }
    }
}

/// A configuration without its repetition: one row of the summary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Point {
    pub workload: String,
    pub weights: String,
    pub policy: String,
    pub quantum_us: u32,
}

impl Point {
    /// The line of a chart this point lies on: everything but the quantum.
    pub fn line(&self) -> Line {
        Line {
            workload: self.workload.clone(),
            weights: self.weights.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// A line of the comparison: a workload, weight set and policy, across the quanta.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Line {
    pub workload: String,
    pub weights: String,
    pub policy: String,
}

impl Line {
    /// How a chart's legend names the line within its workload.
    pub fn label(&self) -> String {
        if self.weights == LAB_WEIGHTS {
            self.policy.clone()
        } else {
            format!("{}, weights {}", self.policy, self.weights)
        }
    }
}

impl Axes {
    /// Every configuration, workload by workload, then by weight set, policy, quantum and
    /// repetition.
    pub fn configurations(&self) -> Vec<Config> {
        let mut configs = Vec::new();
        for workload in &self.workloads {
            for weights in &self.weights {
                for policy in &self.policies {
                    for &quantum_us in &self.quanta_us {
                        for repeat in 1..=self.repeat {
                            configs.push(Config {
                                workload: workload.name.clone(),
                                weights: weights.label(),
                                policy: policy.name().to_string(),
                                quantum_us,
                                repeat,
                            });
                        }
                    }
                }
            }
        }
        configs
    }

    /// How many runs the sweep takes.
    pub fn run_count(&self) -> usize {
        self.workloads.len()
            * self.weights.len()
            * self.policies.len()
            * self.quanta_us.len()
            * self.repeat as usize
    }

    /// The lab that runs `config`: `base` with only the workload's VMs, the weight set, the
    /// policy and the quantum. The lab file's hash stays the file's: the run records which file
    /// it came from, and the configuration says what changed.
    pub fn lab_for(&self, base: &Lab, config: &Config) -> Result<Lab, String> {
        let workload = self
            .workloads
            .iter()
            .find(|workload| workload.name == config.workload)
            .ok_or_else(|| format!("no workload {:?}", config.workload))?;
        let weights = self
            .weights
            .iter()
            .find(|set| set.label() == config.weights)
            .ok_or_else(|| format!("no weight set {:?}", config.weights))?;
        let policy = SchedulerPolicy::from_name(&config.policy)
            .ok_or_else(|| format!("no policy {:?}", config.policy))?;
        let mut lab = base.clone();
        lab.vms = workload
            .vms
            .iter()
            .map(|&index| base.vms[index].clone())
            .collect();
        apply_weights(weights, &mut lab)
            .map_err(|reason| format!("workload {}: {reason}", workload.name))?;
        lab.policy = policy;
        if policy != SchedulerPolicy::Credit {
            // Caps are the credit policy's: under another the run has none (as its lab file
            // could not say otherwise).
            for vm in &mut lab.vms {
                vm.cap_pct = 0;
            }
        }
        lab.quantum_us = config.quantum_us;
        Ok(lab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::sweep::parse_weight_set;

    fn lab() -> Lab {
        let text = "[run]\nquantum_us = 1000\n\
                    [[vm]]\nname = \"a\"\nkernel = \"spin\"\nmemory_mib = 4\n\
                    [[vm]]\nname = \"b\"\nkernel = \"spin\"\nmemory_mib = 4\nweight = 3\n\
                    [[vm]]\nname = \"c\"\nkernel = \"sleepy\"\nmemory_mib = 4\n";
        Lab::parse(std::path::Path::new("lab.toml"), text).unwrap()
    }

    fn axes() -> Axes {
        Axes {
            workloads: vec![
                Workload {
                    name: "ab".into(),
                    vms: vec![0, 1],
                },
                Workload {
                    name: "ac".into(),
                    vms: vec![0, 2],
                },
            ],
            weights: vec![WeightSet::Lab, parse_weight_set("b=5:c=2").unwrap()],
            policies: vec![SchedulerPolicy::RoundRobin, SchedulerPolicy::Boost],
            quanta_us: vec![500, 2_000],
            repeat: 2,
        }
    }

    #[test]
    fn the_plan_spans_every_axis_with_distinct_ids() {
        let axes = axes();
        let configs = axes.configurations();
        assert_eq!(configs.len(), axes.run_count());
        assert_eq!(configs.len(), 2 * 2 * 2 * 2 * 2);
        let mut ids: Vec<String> = configs.iter().map(Config::id).collect();
        assert_eq!(ids[0], "ab.round-robin.w-lab.q500us.r1");
        assert_eq!(ids[1], "ab.round-robin.w-lab.q500us.r2");
        assert_eq!(ids[2], "ab.round-robin.w-lab.q2ms.r1");
        assert!(ids.contains(&"ac.boost.w-b=5_c=2.q2ms.r2".to_string()));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), configs.len());
    }

    #[test]
    fn each_configuration_gets_its_own_lab() {
        let axes = axes();
        let base = lab();
        let config = Config {
            workload: "ac".into(),
            weights: "b=5:c=2".into(),
            policy: "boost".into(),
            quantum_us: 2_000,
            repeat: 1,
        };
        let lab = axes.lab_for(&base, &config).unwrap();
        let names: Vec<(&str, u32)> = lab
            .vms
            .iter()
            .map(|vm| (vm.name.as_str(), vm.weight))
            .collect();
        assert_eq!(names, [("a", 1), ("c", 2)]);
        assert_eq!(lab.quantum_us, 2_000);
        assert_eq!(lab.policy, SchedulerPolicy::Boost);
        assert_eq!(lab.hash, base.hash);
        let run_config = lab.run_config(1_000_000, None);
        assert_eq!(run_config.policy, SchedulerPolicy::Boost);
        assert_eq!(run_config.vms.len(), 2);

        let mut axes = axes;
        axes.weights = vec![WeightSet::Positional(vec![1, 2, 3])];
        let config = Config {
            weights: "1:2:3".into(),
            ..config
        };
        let error = axes.lab_for(&base, &config).unwrap_err();
        assert!(
            error.contains("workload ac") && error.contains("3 weights") && error.contains("2 VMs"),
            "{error}"
        );
    }

    /// A lab with caps swept across policies: the credit runs keep the caps, the others have
    /// none (a cap means nothing to them, and their lab could not say it).
    #[test]
    fn caps_go_only_to_credit_runs() {
        let axes = axes();
        let mut base = lab();
        base.policy = SchedulerPolicy::Credit;
        base.vms[0].cap_pct = 25;
        let config = |policy: &str| Config {
            workload: "ab".into(),
            weights: "lab".into(),
            policy: policy.into(),
            quantum_us: 1_000,
            repeat: 1,
        };
        let credit = axes.lab_for(&base, &config("credit")).unwrap();
        assert_eq!(credit.policy, SchedulerPolicy::Credit);
        assert_eq!(credit.run_config(1, None).vms[0].cap_pct, 25);
        let plain = axes.lab_for(&base, &config("round-robin")).unwrap();
        assert_eq!(plain.run_config(1, None).vms[0].cap_pct, 0);
    }
}
