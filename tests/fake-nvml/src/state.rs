//! The library's global state: the loaded scenario, its clock, the init count and the table of
//! device handles.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gpucost_sim::{Scenario, SimulatedNode};

use crate::abi::{
    c_uint, nvmlDevice_st, nvmlDevice_t, nvmlReturn_t, NVML_ERROR_LIB_RM_VERSION_MISMATCH,
    NVML_ERROR_UNINITIALIZED,
};

/// Names the scenario: a TOML file, or `demo` for the built-in one.
pub const SCENARIO_ENV: &str = "GPUCOST_FAKE_NVML_SCENARIO";
/// Optional: unix seconds (f64) at which scenario time 0 is, so several processes share a timeline.
pub const START_ENV: &str = "GPUCOST_FAKE_NVML_START_UNIX";

const SCENARIO_HINT: &str = "set it to a scenario TOML file or \"demo\"";

/// Most GPUs a scenario may have here (the size of the handle table).
pub const MAX_GPUS: usize = 64;

/// Device handles point at these slots, so a handle stays valid (and the same) for the life of
/// the process, whatever happens to init and shutdown.
static DEVICES: [nvmlDevice_st; MAX_GPUS] = {
    let mut slots = [const { nvmlDevice_st { index: 0 } }; MAX_GPUS];
    let mut i = 0;
    while i < MAX_GPUS {
        slots[i].index = i as c_uint;
        i += 1;
    }
    slots
};

/// Most MIG devices (GPU instances) a GPU may have here: 7 on A100, H100 and H200.
pub const MAX_MIG: usize = 8;

/// MIG device handles: slot `gpu * MAX_MIG + k` stands for the `k`-th MIG device of GPU `gpu`
/// (`nvmlDeviceGetMigDeviceHandleByIndex`), stable like the GPUs' handles.
static MIG_DEVICES: [nvmlDevice_st; MAX_GPUS * MAX_MIG] = {
    let mut slots = [const { nvmlDevice_st { index: 0 } }; MAX_GPUS * MAX_MIG];
    let mut i = 0;
    while i < MAX_GPUS * MAX_MIG {
        slots[i].index = i as c_uint;
        i += 1;
    }
    slots
};

/// The handle of the `k`-th MIG device of GPU `gpu`.
pub fn mig_handle(gpu: u32, k: usize) -> nvmlDevice_t {
    std::ptr::from_ref(&MIG_DEVICES[gpu as usize * MAX_MIG + k]).cast_mut()
}

/// The (GPU, position) a MIG device handle stands for, or `None` for a pointer that is not one
/// of ours. Only compares addresses.
pub fn mig_of(device: nvmlDevice_t) -> Option<(u32, usize)> {
    MIG_DEVICES
        .iter()
        .find(|slot| std::ptr::eq(*slot, device))
        .map(|slot| (slot.index / MAX_MIG as u32, slot.index as usize % MAX_MIG))
}

/// The handle of GPU `index` (`index < MAX_GPUS`).
pub fn handle(index: u32) -> nvmlDevice_t {
    std::ptr::from_ref(&DEVICES[index as usize]).cast_mut()
}

/// The GPU index a handle stands for, or `None` for a pointer that is not one of ours. Only
/// compares addresses, so any pointer value is safe to pass.
pub fn index_of(device: nvmlDevice_t) -> Option<u32> {
    DEVICES
        .iter()
        .find(|slot| std::ptr::eq(*slot, device))
        .map(|slot| slot.index)
}

/// Where scenario time comes from.
#[derive(Debug, Clone, Copy)]
enum Clock {
    /// Since the first successful init in this process.
    SinceInit(Instant),
    /// Since a given unix time ([`START_ENV`]).
    SinceUnix(f64),
}

/// A loaded scenario and its clock. Loaded at the first successful init, kept until the library
/// is unloaded (a shutdown does not restart the timeline).
pub struct Model {
    pub node: SimulatedNode,
    clock: Clock,
}

impl Model {
    /// Loads the scenario the environment names. The error is one line that names the problem.
    fn from_env() -> Result<Model, String> {
        let name = match std::env::var(SCENARIO_ENV) {
            Ok(name) if !name.trim().is_empty() => name,
            Ok(_) => return Err(format!("{SCENARIO_ENV} is empty; {SCENARIO_HINT}")),
            Err(std::env::VarError::NotPresent) => {
                return Err(format!("{SCENARIO_ENV} is not set; {SCENARIO_HINT}"))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!(
                    "{SCENARIO_ENV} is not valid UTF-8; {SCENARIO_HINT}"
                ))
            }
        };
        let scenario = Scenario::load(&name).map_err(|e| one_line(&e.to_string()))?;
        if let Some(i) = scenario
            .gpus
            .iter()
            .position(|g| g.mig_instances.len() > MAX_MIG)
        {
            return Err(format!(
                "scenario {name}: GPU {i} has more than {MAX_MIG} MIG instances"
            ));
        }
        if scenario.gpus.len() > MAX_GPUS {
            return Err(format!(
                "scenario {name} has {} GPUs; this library handles at most {MAX_GPUS}",
                scenario.gpus.len()
            ));
        }
        let clock = match std::env::var(START_ENV) {
            Err(std::env::VarError::NotPresent) => Clock::SinceInit(Instant::now()),
            Err(e) => return Err(format!("{START_ENV}: {e}")),
            Ok(text) => match text.trim().parse::<f64>() {
                Ok(start) if start.is_finite() => Clock::SinceUnix(start),
                _ => {
                    return Err(format!(
                        "{START_ENV}={text:?} is not a number of unix seconds"
                    ))
                }
            },
        };
        Ok(Model {
            node: SimulatedNode::new(scenario),
            clock,
        })
    }

    /// Scenario seconds now: wall seconds since the start, times the scenario's speed (never
    /// negative, so a start in the future holds the timeline at 0).
    pub fn now(&self) -> f64 {
        let wall = match self.clock {
            Clock::SinceInit(at) => at.elapsed().as_secs_f64(),
            Clock::SinceUnix(start) => unix_now() - start,
        };
        wall.max(0.0) * self.node.scenario().speed
    }
}

/// Unix time in seconds, as f64.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Collapses a multi-line message (TOML errors draw the offending line) onto one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything behind the lock.
pub struct Library {
    model: Option<Model>,
    /// Successful inits minus shutdowns; the library answers device calls while this is > 0.
    inits: u32,
    /// Scenario time of the init that found no other one open: from then on the process holds
    /// the library as it was installed at that moment (its `driver_upgrade_at_s` says whether
    /// that was before or after the driver upgrade).
    loaded_at_s: f64,
}

static LIBRARY: Mutex<Library> = Mutex::new(Library {
    model: None,
    inits: 0,
    loaded_at_s: 0.0,
});

/// Locks the global state. A panic while locked (caught at the FFI boundary) leaves the state
/// consistent, so a poisoned lock is simply taken over.
pub fn lock() -> MutexGuard<'static, Library> {
    LIBRARY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why an init failed.
pub enum InitError {
    /// No usable scenario: one line naming the problem.
    Scenario(String),
    /// The driver was upgraded under an init that is still open: the library this process holds
    /// is the old release (`NVML_ERROR_LIB_RM_VERSION_MISMATCH`).
    VersionMismatch,
}

impl Library {
    /// One `nvmlInit*`: loads the scenario the first time, then counts the init. An init with
    /// none open stands for loading the library anew (after an upgrade, the new release); one
    /// while others are open after the scenario's driver upgrade answers the version mismatch,
    /// as the old library still in the process does.
    pub fn init(&mut self) -> Result<(), InitError> {
        if self.model.is_none() {
            self.model = Some(Model::from_env().map_err(InitError::Scenario)?);
        }
        if self.inits == 0 {
            self.loaded_at_s = self.model.as_ref().map_or(0.0, Model::now);
        } else if self.version_mismatch() {
            return Err(InitError::VersionMismatch);
        }
        self.inits += 1;
        Ok(())
    }

    /// One `nvmlShutdown`; false if there was no init left to undo.
    pub fn shutdown(&mut self) -> bool {
        if self.inits == 0 {
            return false;
        }
        self.inits -= 1;
        true
    }

    /// The model, while the library is initialised and matches the driver.
    pub fn active(&self) -> Option<&Model> {
        self.check().ok()
    }

    /// The model, or the code a call answers instead: `NVML_ERROR_UNINITIALIZED` outside an
    /// init/shutdown pair, `NVML_ERROR_LIB_RM_VERSION_MISMATCH` after the scenario's driver
    /// upgrade until the library is initialised anew.
    pub fn check(&self) -> Result<&Model, nvmlReturn_t> {
        match self.model.as_ref().filter(|_| self.inits > 0) {
            None => Err(NVML_ERROR_UNINITIALIZED),
            Some(_) if self.version_mismatch() => Err(NVML_ERROR_LIB_RM_VERSION_MISMATCH),
            Some(m) => Ok(m),
        }
    }

    /// Whether the scenario's driver upgrade happened after the library was loaded.
    fn version_mismatch(&self) -> bool {
        self.model.as_ref().is_some_and(|m| {
            m.node
                .scenario()
                .driver_upgrade_at_s
                .is_some_and(|at| self.loaded_at_s < at && m.now() >= at)
        })
    }
}
