//! The processes on a GPU, with the memory each holds and its share of the SMs.
//!
//! Read through NVML's raw calls (`Nvml::lib`), not nvml-wrapper's methods, because real drivers
//! answer in ways those methods do not survive (issue 14):
//!
//! - **Process lists.** nvml-wrapper sizes its buffer for n + 5 entries of the 24-byte
//!   `nvmlProcessInfo_t` that nvml.h declares, but R535.54 drivers (CUDA 12.2) write 32-byte
//!   `nvmlProcessInfo_v3_t` entries from the `_v3` calls without a version bump (nvitop PR 79 and
//!   issue 88, go-nvml issue 75, pynvml PR 48): every process after the first then decodes as
//!   pid 0 or 4294967295, and above 15 processes the driver writes past the buffer. Later
//!   drivers export `nvmlDeviceGetRunningProcessDetailList` and went back to 24-byte `_v3`
//!   entries (nvitop PR 226). So the detail list is preferred where the library exports it and
//!   the GPU answers it (Hopper and newer); else the `_v3` call gets a buffer with room for
//!   32-byte entries, filled with a sentinel, and the entry size is read from how far the driver
//!   wrote. A symbol the library lacks is a checked `Err` of the bindings, never a panic.
//! - **Contexts.** Compute processes are not the only users of a GPU: graphics contexts and MPS
//!   clients are in lists of their own. The three lists are read and merged by pid.
//! - **Per-process utilization.** NVML returns samples only for processes with non-zero
//!   utilization, and `NVML_ERROR_NOT_FOUND` when no sample is newer than the last one seen
//!   (nvml.h): a quiet window, not an error. nvml-wrapper sizes its buffer to the count it was
//!   just told, so a sample taken between the two calls fails the read; the buffer here is
//!   padded. A listed process without a sample used 0 % of the SMs. Reads closer together than
//!   the driver's sample period would find nothing newer although processes are busy, so each
//!   read covers at least the last [`LOOKBACK_US`] of samples.

use std::collections::BTreeMap;
use std::mem::size_of;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Device;
use nvml_wrapper_sys::bindings::{
    nvmlDevice_t, nvmlProcessDetailList_v1_t, nvmlProcessDetail_v1_t, nvmlProcessInfo_t,
    nvmlProcessUtilizationSample_t, nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
    nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND, nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST,
    nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE, nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
    nvmlReturn_enum_NVML_ERROR_NOT_FOUND, nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
    nvmlReturn_enum_NVML_SUCCESS, nvmlReturn_t, NvmlLib,
};

use gpucost_core::reading::{Field, FieldError, ProcessUse, SampleError};

/// Bytes of one `_v3` entry as nvml.h declares it (`nvmlProcessInfo_t`, the v2 layout).
const DECLARED_ENTRY: usize = size_of::<nvmlProcessInfo_t>();
/// Bytes of the widest entry a driver is known to write from the `_v3` calls
/// (`nvmlProcessInfo_v3_t`, the layout of `nvmlProcessDetail_v1_t`).
const WIDEST_ENTRY: usize = size_of::<nvmlProcessDetail_v1_t>();
/// The entry sizes drivers are known to write from the `_v3` calls: `nvmlProcessInfo_v1_t`
/// (reported in nvitop PR 226), `_v2_t` (declared) and `_v3_t` (R535.54).
const KNOWN_ENTRIES: [usize; 3] = [16, DECLARED_ENTRY, WIDEST_ENTRY];
/// What a `_v3` buffer is filled with before the call, to see how far the driver wrote. No
/// entry layout ends in this byte: each ends in the high byte of a memory size or an instance
/// id, which is 0x00 or 0xFF.
const SENTINEL: u8 = 0xA5;
/// `NVML_VALUE_NOT_AVAILABLE` as a memory size.
const NOT_AVAILABLE: u64 = u64::MAX;
/// `nvmlProcessDetailList_v1` (`NVML_STRUCT_VERSION(ProcessDetailList, 1)`).
const DETAIL_LIST_V1: u32 = size_of::<nvmlProcessDetailList_v1_t>() as u32 | 1 << 24;
/// Entries a first call makes room for; later calls on a GPU start from what it needed.
const FIRST_ROOM: u32 = 32;
/// The shortest stretch of utilization samples a read covers, in microseconds: several of the
/// driver's sample periods (at most 1/6 s for utilization, nvml.h), so that reads close together
/// still see the processes that are busy.
const LOOKBACK_US: u64 = 2_000_000;
/// Calls made for one list before giving up on a list that keeps growing.
const ATTEMPTS: usize = 4;

const SUCCESS: nvmlReturn_t = nvmlReturn_enum_NVML_SUCCESS;
const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
const NOT_FOUND: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_FOUND;
const NOT_SUPPORTED: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
const GPU_IS_LOST: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST;

/// NVML's process lists, one per kind of context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Compute,
    Graphics,
    Mps,
}

impl List {
    const ALL: [List; 3] = [List::Compute, List::Graphics, List::Mps];

    /// Its `nvmlProcessMode_t`.
    fn mode(self) -> u32 {
        self as u32
    }

    fn name(self) -> &'static str {
        match self {
            List::Compute => "compute",
            List::Graphics => "graphics",
            List::Mps => "MPS",
        }
    }
}

/// A process as a list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed {
    pid: u32,
    /// `None` where NVML cannot tell (`NVML_VALUE_NOT_AVAILABLE`).
    used_memory_bytes: Option<u64>,
    /// The MIG GPU instance the process runs in (`gpuInstanceId`); `None` outside MIG
    /// (`NVML_VALUE_NOT_AVAILABLE`) and in 16-byte entries, which have no such field.
    gpu_instance: Option<u32>,
}

/// Why a list could not be read.
#[derive(Debug)]
enum ListError {
    /// The call answered this code.
    Nvml(nvmlReturn_t),
    /// The library does not export the call.
    Missing(&'static str),
    /// The driver wrote entries of a size no known layout has.
    Layout(String),
}

/// What is kept per GPU between reads.
#[derive(Debug, Default)]
struct GpuProcs {
    /// The newest per-process utilization sample seen (NVML timestamp, microseconds), so each
    /// read asks only for samples since then.
    last_util_sample: Option<u64>,
    /// Per list: the process detail list answered that it does not serve it here.
    no_detail_list: [bool; 3],
    /// Per list: the entries the last successful call made room for.
    room: [u32; 3],
    /// The samples the last utilization call needed.
    util_room: u32,
    /// The `_v3` entry size already said in the log.
    said_entry: Option<usize>,
}

/// The process readings' state of every GPU.
#[derive(Debug, Default)]
pub(super) struct ProcessState {
    gpus: BTreeMap<u32, GpuProcs>,
}

/// The processes on GPU `index` (compute, graphics and MPS clients, once each), with their SM
/// utilization since the newest sample seen before.
///
/// For a MIG instance (`instance`: its GPU instance id) `d` is its parent GPU: in MIG mode the
/// parent's lists hold every instance's processes, each with its `gpuInstanceId` (nvml.h: "In
/// MIG mode, if device handle is provided, the API returns aggregate information"), and the
/// instance's are those with its id. Process utilization "is not currently supported" on MIG
/// (nvml.h), so it is not asked for: the processes have no SM share.
pub(super) fn read_processes(
    lib: &NvmlLib,
    d: &Device<'_>,
    index: u32,
    instance: Option<u32>,
    state: &mut ProcessState,
    e: &mut Vec<(Field, FieldError)>,
) -> Result<Option<Vec<ProcessUse>>, SampleError> {
    // SAFETY: the raw handle is only passed back to the library it came from, while `d` (and so
    // the `Nvml` that owns the library) is alive.
    let device = unsafe { d.handle() };
    let gpu = state.gpus.entry(index).or_default();
    let mut lists = Vec::new();
    for list in List::ALL {
        match read_list(lib, device, list, gpu, index) {
            Ok(l) => lists.push(l),
            Err(ListError::Nvml(GPU_IS_LOST)) => {
                return Err(SampleError::GpuLost(format!(
                    "while reading the {} processes",
                    list.name()
                )))
            }
            // A GPU or driver without graphics or MPS contexts has nothing to add.
            Err(ListError::Nvml(NOT_SUPPORTED) | ListError::Missing(_))
                if list != List::Compute => {}
            Err(ListError::Nvml(NOT_SUPPORTED)) => {
                e.push((Field::Processes, FieldError::NotSupported))
            }
            Err(err) => e.push((
                Field::Processes,
                FieldError::Failed(format!("{} processes: {}", list.name(), describe(&err))),
            )),
        }
    }
    if lists.is_empty() {
        return Ok(None);
    }
    let mut listed = merge(lists);
    if let Some(gi) = instance {
        listed.retain(|p| p.gpu_instance == Some(gi));
        return Ok(Some(with_sm_shares(&listed, None)));
    }
    if listed.is_empty() {
        return Ok(Some(Vec::new()));
    }
    // NVML stamps samples with the CPU time in microseconds since the epoch.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let since = samples_since(gpu.last_util_sample, now_us);
    let samples = match read_utilization(lib, device, since, &mut gpu.util_room) {
        Ok(s) => Some(s),
        Err(GPU_IS_LOST) => {
            return Err(SampleError::GpuLost(
                "while reading process utilization".into(),
            ))
        }
        Err(NOT_SUPPORTED) => {
            e.push((Field::ProcessUtilization, FieldError::NotSupported));
            None
        }
        Err(code) => {
            e.push((
                Field::ProcessUtilization,
                FieldError::Failed(NvmlError::from(code).to_string()),
            ));
            None
        }
    };
    if let Some(newest) = samples.iter().flatten().map(|s| s.timeStamp).max() {
        gpu.last_util_sample = Some(newest.max(gpu.last_util_sample.unwrap_or(0)));
    }
    let samples: Option<Vec<(u32, u32)>> =
        samples.map(|s| s.iter().map(|s| (s.pid, s.smUtil)).collect());
    Ok(Some(with_sm_shares(&listed, samples.as_deref())))
}

/// The `lastSeenTimeStamp` of a read: everything the driver holds at first (0), then the
/// samples since the newest one seen, but at least those of the last [`LOOKBACK_US`]. A driver
/// whose stamps are not of the epoch (older than the lookback) is read since its newest.
fn samples_since(newest_seen: Option<u64>, now_us: u64) -> u64 {
    newest_seen.map_or(0, |newest| newest.min(now_us.saturating_sub(LOOKBACK_US)))
}

/// One list of the GPU: through the process detail list where the library exports it and it
/// serves this GPU and list, else through the `_v3` call.
fn read_list(
    lib: &NvmlLib,
    device: nvmlDevice_t,
    list: List,
    gpu: &mut GpuProcs,
    index: u32,
) -> Result<Vec<Listed>, ListError> {
    let slot = list as usize;
    if !gpu.no_detail_list[slot] {
        if let Ok(detail) = lib.nvmlDeviceGetRunningProcessDetailList.as_ref() {
            match read_detail_list(*detail, device, list, &mut gpu.room[slot]) {
                Err(ListError::Nvml(code)) if detail_list_declines(code) => {
                    tracing::debug!(
                        gpu = index,
                        "GPU {index}: the process detail list does not serve the {} list \
                         ({}); using the _v3 call",
                        list.name(),
                        NvmlError::from(code)
                    );
                    gpu.no_detail_list[slot] = true;
                }
                other => return other,
            }
        } else {
            gpu.no_detail_list[slot] = true;
        }
    }
    let (processes, entry) = read_v3(lib, device, list, &mut gpu.room[slot])?;
    if let Some(entry) = entry.filter(|b| gpu.said_entry != Some(*b)) {
        gpu.said_entry = Some(entry);
        if entry == DECLARED_ENTRY {
            tracing::debug!(
                gpu = index,
                "GPU {index}: the driver writes 24-byte process entries, as nvml.h declares"
            );
        } else {
            tracing::info!(
                gpu = index,
                "GPU {index}: the driver writes {entry}-byte process entries instead of the \
                 {DECLARED_ENTRY} bytes nvml.h declares (as R535.54 drivers do); they are read \
                 as written"
            );
        }
    }
    Ok(processes)
}

/// Answers of the process detail list that mean "not here": the GPU does not support it (nvml.h:
/// Hopper and newer), the library only has a stub, or it does not know this version or mode.
fn detail_list_declines(code: nvmlReturn_t) -> bool {
    [
        NOT_SUPPORTED,
        nvmlReturn_enum_NVML_ERROR_FUNCTION_NOT_FOUND,
        nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
    ]
    .contains(&code)
}

/// Room for `count` entries even from a driver that writes 32-byte entries but stops at the
/// promised number of 24-byte ones, plus a margin for processes that start meanwhile.
fn room_for(count: u32) -> u32 {
    count.saturating_mul(4).div_ceil(3).saturating_add(8)
}

/// `nvmlDeviceGetRunningProcessDetailList` for one mode.
fn read_detail_list(
    call: unsafe extern "C" fn(nvmlDevice_t, *mut nvmlProcessDetailList_v1_t) -> nvmlReturn_t,
    device: nvmlDevice_t,
    list: List,
    room: &mut u32,
) -> Result<Vec<Listed>, ListError> {
    let mut entries_room = (*room).max(FIRST_ROOM);
    for _ in 0..ATTEMPTS {
        let empty = nvmlProcessDetail_v1_t {
            pid: 0,
            usedGpuMemory: 0,
            gpuInstanceId: 0,
            computeInstanceId: 0,
            usedGpuCcProtectedMemory: 0,
        };
        let mut entries = vec![empty; entries_room as usize];
        let mut request = nvmlProcessDetailList_v1_t {
            version: DETAIL_LIST_V1,
            mode: list.mode(),
            numProcArrayEntries: entries_room,
            procArray: entries.as_mut_ptr(),
        };
        // SAFETY: `procArray` points to `numProcArrayEntries` initialised entries of
        // `nvmlProcessDetail_v1_t`, the type the call declares and the version names; `entries`
        // outlives the call.
        let code = unsafe { call(device, &mut request) };
        match code {
            SUCCESS => {
                *room = entries_room;
                entries.truncate(request.numProcArrayEntries.min(entries_room) as usize);
                return Ok(entries
                    .iter()
                    .filter_map(|p| listed(p.pid, p.usedGpuMemory, Some(p.gpuInstanceId)))
                    .collect());
            }
            INSUFFICIENT_SIZE => entries_room = room_for(request.numProcArrayEntries),
            other => return Err(ListError::Nvml(other)),
        }
    }
    Err(ListError::Nvml(INSUFFICIENT_SIZE))
}

/// A `_v3` running-process call, with the entry size the driver wrote.
fn read_v3(
    lib: &NvmlLib,
    device: nvmlDevice_t,
    list: List,
    room: &mut u32,
) -> Result<(Vec<Listed>, Option<usize>), ListError> {
    let call = match list {
        List::Compute => lib.nvmlDeviceGetComputeRunningProcesses_v3.as_ref(),
        List::Graphics => lib.nvmlDeviceGetGraphicsRunningProcesses_v3.as_ref(),
        List::Mps => lib.nvmlDeviceGetMPSComputeRunningProcesses_v3.as_ref(),
    }
    .map_err(|_| ListError::Missing(list.name()))?;
    let mut promised = (*room).max(FIRST_ROOM);
    for _ in 0..ATTEMPTS {
        let mut words =
            vec![u64::from_ne_bytes([SENTINEL; 8]); promised as usize * WIDEST_ENTRY / 8];
        let mut count = promised;
        // SAFETY: `words` holds `promised` x 32 bytes, 8-byte aligned. We promise `promised`
        // entries of the 24-byte `nvmlProcessInfo_t` the call declares; a driver that writes
        // the 32-byte `nvmlProcessInfo_v3_t` instead (R535.54), the widest layout any driver is
        // known to write, still stays within the buffer for all of them.
        let code = unsafe { call(device, &mut count, words.as_mut_ptr().cast()) };
        match code {
            SUCCESS if count == 0 => return Ok((Vec::new(), None)),
            // Room for every entry at 32 bytes within what was promised at 24, so that even a
            // driver that stops at the promised bytes wrote them all: else ask again.
            SUCCESS if count as usize * WIDEST_ENTRY > promised as usize * DECLARED_ENTRY => {
                promised = room_for(count)
            }
            SUCCESS => {
                *room = promised;
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
                let count = count as usize;
                let Some(entry) = entry_size(&bytes, count) else {
                    return Err(ListError::Layout(format!(
                        "{count} entries in {} bytes, a layout no known driver writes",
                        written(&bytes)
                    )));
                };
                return Ok((decode(&bytes, count, entry), Some(entry)));
            }
            INSUFFICIENT_SIZE => promised = room_for(count),
            other => return Err(ListError::Nvml(other)),
        }
    }
    Err(ListError::Nvml(INSUFFICIENT_SIZE))
}

/// One past the last byte of `bytes` that is not the sentinel: how far the driver wrote.
fn written(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|b| *b != SENTINEL)
        .map_or(0, |i| i + 1)
}

/// The entry size with which `count` entries end exactly where the driver stopped writing.
fn entry_size(bytes: &[u8], count: usize) -> Option<usize> {
    let end = written(bytes);
    KNOWN_ENTRIES.into_iter().find(|size| count * size == end)
}

/// `count` entries of `entry` bytes: the pid at offset 0 and the memory at offset 8 in every
/// known layout, the GPU instance id at offset 16 in the 24- and 32-byte ones.
fn decode(bytes: &[u8], count: usize, entry: usize) -> Vec<Listed> {
    bytes
        .chunks_exact(entry)
        .take(count)
        .filter_map(|e| {
            let pid = u32::from_ne_bytes(e[0..4].try_into().expect("4 bytes"));
            let memory = u64::from_ne_bytes(e[8..16].try_into().expect("8 bytes"));
            let gi = e
                .get(16..20)
                .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")));
            listed(pid, memory, gi)
        })
        .collect()
}

/// A process from an entry; none for pid 0 or 4294967295, which no process has (they are what
/// entries read at the wrong offset show).
fn listed(pid: u32, memory: u64, gpu_instance: Option<u32>) -> Option<Listed> {
    if pid == 0 || pid == u32::MAX {
        tracing::debug!("ignoring a process entry with pid {pid}");
        return None;
    }
    Some(Listed {
        pid,
        used_memory_bytes: (memory != NOT_AVAILABLE).then_some(memory),
        gpu_instance: gpu_instance.filter(|gi| *gi != u32::MAX),
    })
}

/// The processes of every list, once each, in pid order. A process in two lists (nvidia-smi's
/// "C+G") is reported by each with its whole memory on the GPU, so the largest report is its
/// memory: summing would count it twice.
fn merge(lists: Vec<Vec<Listed>>) -> Vec<Listed> {
    let mut by_pid: BTreeMap<u32, Listed> = BTreeMap::new();
    for p in lists.into_iter().flatten() {
        by_pid
            .entry(p.pid)
            .and_modify(|m| {
                m.used_memory_bytes = m.used_memory_bytes.max(p.used_memory_bytes);
                m.gpu_instance = m.gpu_instance.or(p.gpu_instance);
            })
            .or_insert(p);
    }
    by_pid.into_values().collect()
}

/// The listed processes with their SM utilization from `samples` (pid, percent), averaged where
/// a process has several. With samples read (`Some`), a process without one used 0 %: NVML
/// samples only processes that used the GPU. Without (`None`: not supported, or the call
/// failed) no process has a share.
fn with_sm_shares(listed: &[Listed], samples: Option<&[(u32, u32)]>) -> Vec<ProcessUse> {
    let mut sm: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for (pid, util) in samples.into_iter().flatten() {
        let e = sm.entry(*pid).or_default();
        e.0 += u64::from(*util);
        e.1 += 1;
    }
    listed
        .iter()
        .map(|p| ProcessUse {
            pid: p.pid,
            used_memory_bytes: p.used_memory_bytes,
            sm_util_pct: samples.map(|_| {
                sm.get(&p.pid)
                    .map_or(0, |(sum, n)| (sum / n.max(&1)) as u32)
            }),
        })
        .collect()
}

/// `nvmlDeviceGetProcessUtilization` for the samples newer than `since`; none newer
/// (`NVML_ERROR_NOT_FOUND`) is an empty list.
fn read_utilization(
    lib: &NvmlLib,
    device: nvmlDevice_t,
    since: u64,
    room: &mut u32,
) -> Result<Vec<nvmlProcessUtilizationSample_t>, nvmlReturn_t> {
    let call = lib
        .nvmlDeviceGetProcessUtilization
        .as_ref()
        .map_err(|_| NOT_SUPPORTED)?;
    let mut samples_room = (*room).max(FIRST_ROOM * 2);
    for _ in 0..ATTEMPTS {
        let empty = nvmlProcessUtilizationSample_t {
            pid: 0,
            timeStamp: 0,
            smUtil: 0,
            memUtil: 0,
            encUtil: 0,
            decUtil: 0,
        };
        let mut samples = vec![empty; samples_room as usize];
        let mut count = samples_room;
        // SAFETY: `samples` holds `count` initialised `nvmlProcessUtilizationSample_t`, the type
        // the call declares, and outlives the call.
        let code = unsafe { call(device, samples.as_mut_ptr(), &mut count, since) };
        match code {
            SUCCESS => {
                *room = count.saturating_mul(2);
                samples.truncate(count.min(samples_room) as usize);
                return Ok(samples);
            }
            NOT_FOUND => return Ok(Vec::new()),
            // Samples arrived since the size was known: ask again with room to spare.
            INSUFFICIENT_SIZE => samples_room = count.saturating_add((count / 2).max(16)),
            other => return Err(other),
        }
    }
    Err(INSUFFICIENT_SIZE)
}

fn describe(err: &ListError) -> String {
    match err {
        ListError::Nvml(code) => NvmlError::from(*code).to_string(),
        ListError::Missing(name) => {
            format!("the library has no nvmlDevice*RunningProcesses_v3 call for the {name} list")
        }
        ListError::Layout(what) => what.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer as a driver leaves it: `entries` written with `entry` bytes each from `room` x 32
    /// bytes of sentinel.
    fn driver_wrote(entries: &[(u32, u64)], entry: usize, room: usize) -> Vec<u8> {
        let mut bytes = vec![SENTINEL; room * WIDEST_ENTRY];
        for (i, (pid, memory)) in entries.iter().enumerate() {
            let mut e = [0u8; 32];
            e[0..4].copy_from_slice(&pid.to_ne_bytes());
            e[8..16].copy_from_slice(&memory.to_ne_bytes());
            e[16..24].copy_from_slice(&[0xFF; 8]);
            bytes[i * entry..(i + 1) * entry].copy_from_slice(&e[..entry]);
        }
        bytes
    }

    #[test]
    fn issue_14_the_entry_size_is_read_from_how_far_the_driver_wrote() {
        let procs: Vec<(u32, u64)> = (0..20).map(|i| (1000 + i, u64::from(i) << 20)).collect();
        for entry in [16, 24, 32] {
            for n in [1, 2, 5, 20] {
                let bytes = driver_wrote(&procs[..n], entry, 40);
                assert_eq!(entry_size(&bytes, n), Some(entry), "{entry} bytes x {n}");
                let got = decode(&bytes, n, entry);
                let want: Vec<Listed> = procs[..n]
                    .iter()
                    .map(|(pid, m)| Listed {
                        pid: *pid,
                        used_memory_bytes: Some(*m),
                        gpu_instance: None,
                    })
                    .collect();
                assert_eq!(got, want, "{entry} bytes x {n}");
            }
        }
        // A memory size NVML cannot tell, and no memory at all.
        let bytes = driver_wrote(&[(7, NOT_AVAILABLE), (8, 0)], 32, 4);
        assert_eq!(entry_size(&bytes, 2), Some(32));
        let got = decode(&bytes, 2, 32);
        assert_eq!(got[0].used_memory_bytes, None);
        assert_eq!(got[1].used_memory_bytes, Some(0));
        // A driver that stopped somewhere no layout ends: no guess.
        let mut bytes = driver_wrote(&procs[..3], 24, 8);
        bytes[72..76].copy_from_slice(&[0; 4]);
        assert_eq!(entry_size(&bytes, 3), None);
    }

    #[test]
    fn issue_14_32_byte_entries_read_as_24_give_the_phantom_pids_0_and_4294967295() {
        // What nvml-wrapper saw on R535.54, and what `listed` refuses.
        let bytes = driver_wrote(&[(1000, 1 << 30), (1001, 0), (1002, 0)], 32, 8);
        let pids: Vec<u32> = bytes
            .chunks_exact(24)
            .take(3)
            .map(|e| u32::from_ne_bytes(e[0..4].try_into().unwrap()))
            .collect();
        assert_eq!(pids, [1000, 0, u32::MAX]);
        assert_eq!(decode(&bytes, 3, 24).len(), 1, "only the real first entry");
        assert_eq!(decode(&bytes, 3, 32).len(), 3);
    }

    #[test]
    fn utilization_reads_cover_at_least_the_lookback() {
        let now = 1_700_000_000_000_000;
        assert_eq!(samples_since(None, now), 0, "the whole buffer at first");
        // A read long after the last: everything since the newest sample seen.
        assert_eq!(samples_since(Some(now - 5_000_000), now), now - 5_000_000);
        // A read soon after: the last two seconds, not just what is newer than the last read.
        assert_eq!(samples_since(Some(now - 100_000), now), now - LOOKBACK_US);
        // Stamps of another clock (microseconds since boot): since the newest.
        assert_eq!(samples_since(Some(5_000_000), now), 5_000_000);
    }

    #[test]
    fn room_for_32_byte_entries_within_the_promised_24_byte_ones() {
        for count in [0, 1, 2, 15, 16, 20, 1000] {
            let room = room_for(count);
            assert!(room as usize * DECLARED_ENTRY >= count as usize * WIDEST_ENTRY);
            assert!(room >= count + 8);
        }
    }

    #[test]
    fn issue_14_lists_merge_by_pid_with_the_largest_memory() {
        let l = |pid, m: Option<u64>| Listed {
            pid,
            used_memory_bytes: m,
            gpu_instance: None,
        };
        let compute = vec![l(10, Some(100)), l(12, Some(300))];
        let graphics = vec![l(11, Some(200)), l(12, Some(300))];
        let mps = vec![l(13, None), l(10, None)];
        assert_eq!(
            merge(vec![compute, graphics, mps]),
            [
                l(10, Some(100)),
                l(11, Some(200)),
                l(12, Some(300)),
                l(13, None)
            ]
        );
    }

    #[test]
    fn issue_14_a_listed_process_without_a_sample_used_no_sm() {
        let l = |pid, m| Listed {
            pid,
            used_memory_bytes: Some(m),
            gpu_instance: None,
        };
        let listed = [l(1, 1 << 30), l(2, 40 << 30)];
        // Several samples of the busy process, none of the idle one.
        let got = with_sm_shares(&listed, Some(&[(1, 80), (1, 90), (9, 50)]));
        let sm: Vec<Option<u32>> = got.iter().map(|p| p.sm_util_pct).collect();
        assert_eq!(sm, [Some(85), Some(0)]);
        // Nothing newer than the last sample (NOT_FOUND): every process used 0 %.
        let got = with_sm_shares(&listed, Some(&[]));
        assert!(got.iter().all(|p| p.sm_util_pct == Some(0)));
        // Not read: unknown.
        let got = with_sm_shares(&listed, None);
        assert!(got.iter().all(|p| p.sm_util_pct.is_none()));
    }

    #[test]
    fn issue_14_an_idle_process_holding_memory_pays_nothing_while_another_computes() {
        use gpucost_core::account::cost::owner_weights;
        use gpucost_core::attribute::process::{ProcInfo, ProcSource};
        use gpucost_core::attribute::{attribute, GpuInput, JobMap, JobOwners};

        /// No process is known to /proc: each is its own unattributed job.
        struct Nobody;
        impl ProcSource for Nobody {
            fn info(&self, _: u32) -> Option<ProcInfo> {
                None
            }
        }
        let l = |pid, m| Listed {
            pid,
            used_memory_bytes: Some(m),
            gpu_instance: None,
        };
        // pid 1 computes with 1 GiB; pid 2 holds 40 GiB and has no sample.
        let procs = with_sm_shares(&[l(1, 1 << 30), l(2, 40 << 30)], Some(&[(1, 80)]));
        let gpus = [GpuInput {
            index: 0,
            uuid: "GPU-0",
            processes: &procs,
        }];
        let a = attribute(&gpus, &Nobody, &[], &JobOwners::new(), &[], &JobMap::new());
        assert_eq!(
            a.owners[0],
            [
                ("unattributed:1".to_string(), 1.0),
                ("unattributed:2".to_string(), 0.0)
            ]
        );
        // Before, the idle process had no share at all, so the split went by memory: 40 to 1
        // against the job that did nothing.
        let before: Vec<(String, Option<f64>, Option<u64>)> = vec![
            ("a".into(), Some(80.0), Some(1 << 30)),
            ("b".into(), None, Some(40 << 30)),
        ];
        assert!(owner_weights(&before)[1].1 > 0.9);
    }
}
