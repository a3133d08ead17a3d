//! The pinned CUDA compiler tools, for the tests: NVRTC (loaded by path, one per toolchain),
//! ptxas and nvdisasm, as `scripts/install-cuda-tools.sh` installs them; the PTX generator; and
//! the compile checks that CI runs without a GPU.
//!
//! NVRTC is bound here directly (a handful of C functions through libloading) rather than
//! through cudarc, because the checks need two NVRTC versions with the same soname in one
//! process, each from a given file; cudarc loads one `libnvrtc.so.12` by name. The run-time
//! path (`gpu.rs`) goes through cudarc with the same [`registry::compile_options`].
//!
//! Where the tools are: the variables in [`Toolchain::nvrtc_env`], [`Toolchain::ptxas_env`] and
//! `GPUCOST_NVDISASM`, taken from the environment or else from `target/cuda-tools/env.sh`
//! (which the install script writes). When they are missing the checks fail, unless
//! `GPUCOST_SKIP_CUDA_TOOLS=1` says to skip them.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::registry::{self, Module, ModuleId, Target, Toolchain};

pub const SKIP_ENV: &str = "GPUCOST_SKIP_CUDA_TOOLS";
pub const NVDISASM_ENV: &str = "GPUCOST_NVDISASM";

/// Paths of the installed tools.
#[derive(Debug, Clone)]
pub struct Tools {
    nvrtc: BTreeMap<Toolchain, PathBuf>,
    ptxas: BTreeMap<Toolchain, PathBuf>,
    nvdisasm: PathBuf,
}

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `KEY=VALUE` pairs from the install script's `env.sh` (lines `export KEY="VALUE"`).
fn read_env_file(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

impl Tools {
    /// Finds the tools, or says what is missing and how to install it.
    pub fn find() -> Result<Tools, String> {
        let env_file = crate_root().join("../target/cuda-tools/env.sh");
        let file = read_env_file(&env_file);
        let get = |key: &str| -> Result<PathBuf, String> {
            let value = std::env::var(key).ok().or_else(|| file.get(key).cloned());
            let path = value
                .map(PathBuf::from)
                .ok_or_else(|| format!("{key} is not set and not in {}", env_file.display()))?;
            if path.exists() {
                Ok(path)
            } else {
                Err(format!("{key}={} does not exist", path.display()))
            }
        };
        let mut tools = Tools {
            nvrtc: BTreeMap::new(),
            ptxas: BTreeMap::new(),
            nvdisasm: get(NVDISASM_ENV)?,
        };
        for tc in Toolchain::ALL {
            tools.nvrtc.insert(tc, get(tc.nvrtc_env())?);
            tools.ptxas.insert(tc, get(tc.ptxas_env())?);
        }
        Ok(tools)
    }

    /// The tools, or `None` when `GPUCOST_SKIP_CUDA_TOOLS=1`; panics (fails the test) when
    /// they are missing otherwise.
    pub fn required() -> Option<&'static Tools> {
        static TOOLS: OnceLock<Result<Tools, String>> = OnceLock::new();
        if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
            eprintln!("{SKIP_ENV}=1: skipping the CUDA compile checks");
            return None;
        }
        match TOOLS.get_or_init(Tools::find) {
            Ok(t) => Some(t),
            Err(e) => panic!(
                "CUDA compiler tools not found: {e}.\n\
                 Install them with `bash scripts/install-cuda-tools.sh` (pinned PyPI wheels into \
                 target/cuda-tools), or set {SKIP_ENV}=1 to skip these checks."
            ),
        }
    }

    pub fn nvrtc(&self, tc: Toolchain) -> &Path {
        &self.nvrtc[&tc]
    }

    pub fn ptxas(&self, tc: Toolchain) -> &Path {
        &self.ptxas[&tc]
    }

    pub fn nvdisasm(&self) -> &Path {
        &self.nvdisasm
    }
}

type NvrtcResult = c_int;

/// NVRTC loaded from one file.
pub struct Nvrtc {
    _lib: libloading::Library,
    version: unsafe extern "C" fn(*mut c_int, *mut c_int) -> NvrtcResult,
    create: unsafe extern "C" fn(
        *mut *mut std::ffi::c_void,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcResult,
    compile:
        unsafe extern "C" fn(*mut std::ffi::c_void, c_int, *const *const c_char) -> NvrtcResult,
    ptx_size: unsafe extern "C" fn(*mut std::ffi::c_void, *mut usize) -> NvrtcResult,
    ptx: unsafe extern "C" fn(*mut std::ffi::c_void, *mut c_char) -> NvrtcResult,
    log_size: unsafe extern "C" fn(*mut std::ffi::c_void, *mut usize) -> NvrtcResult,
    log: unsafe extern "C" fn(*mut std::ffi::c_void, *mut c_char) -> NvrtcResult,
    destroy: unsafe extern "C" fn(*mut *mut std::ffi::c_void) -> NvrtcResult,
}

impl Nvrtc {
    /// Loads the NVRTC library at `path`.
    pub fn load(path: &Path) -> Result<Nvrtc, String> {
        // SAFETY: libnvrtc's initializers have no preconditions; the symbols below are NVRTC's
        // stable C API (nvrtc.h), with the signatures written out in the field types.
        unsafe {
            let lib = libloading::Library::new(path)
                .map_err(|e| format!("loading {}: {e}", path.display()))?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name)
                        .map_err(|e| format!("{} in {}: {e}", stringify!($name), path.display()))?
                };
            }
            Ok(Nvrtc {
                version: sym!(b"nvrtcVersion"),
                create: sym!(b"nvrtcCreateProgram"),
                compile: sym!(b"nvrtcCompileProgram"),
                ptx_size: sym!(b"nvrtcGetPTXSize"),
                ptx: sym!(b"nvrtcGetPTX"),
                log_size: sym!(b"nvrtcGetProgramLogSize"),
                log: sym!(b"nvrtcGetProgramLog"),
                destroy: sym!(b"nvrtcDestroyProgram"),
                _lib: lib,
            })
        }
    }

    pub fn version(&self) -> (u32, u32) {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through valid pointers.
        unsafe { (self.version)(&mut major, &mut minor) };
        (major as u32, minor as u32)
    }

    /// Compiles `source` (named `name`) with `options`; the PTX, or the error and log.
    pub fn compile(&self, source: &str, name: &str, options: &[String]) -> Result<String, String> {
        let src = CString::new(source).map_err(|e| e.to_string())?;
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        let opts: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()).expect("option without NUL"))
            .collect();
        let opt_ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
        let mut prog = std::ptr::null_mut();
        // SAFETY: every pointer passed is valid for the call (the CStrings outlive it); the
        // program is destroyed exactly once below; buffers are sized by the matching *Size call.
        unsafe {
            let r = (self.create)(
                &mut prog,
                src.as_ptr(),
                cname.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            if r != 0 {
                return Err(format!("nvrtcCreateProgram: error {r}"));
            }
            let r = (self.compile)(prog, opt_ptrs.len() as c_int, opt_ptrs.as_ptr());
            let mut n = 0usize;
            (self.log_size)(prog, &mut n);
            let mut log = vec![0 as c_char; n.max(1)];
            (self.log)(prog, log.as_mut_ptr());
            let log = CStr::from_ptr(log.as_ptr()).to_string_lossy().into_owned();
            let out = if r != 0 {
                Err(format!("nvrtcCompileProgram: error {r}\n{log}"))
            } else {
                let mut n = 0usize;
                (self.ptx_size)(prog, &mut n);
                let mut ptx = vec![0 as c_char; n.max(1)];
                (self.ptx)(prog, ptx.as_mut_ptr());
                Ok(CStr::from_ptr(ptx.as_ptr()).to_string_lossy().into_owned())
            };
            (self.destroy)(&mut prog);
            out
        }
    }
}

/// The shipped text for `module` on `target`: header + NVRTC output.
pub fn generate(nvrtc: &Nvrtc, module: &Module, target: Target) -> Result<String, String> {
    let ptx = nvrtc.compile(
        module.source,
        &module.file_name(),
        &registry::compile_options(target.compute()),
    )?;
    Ok(format!("{}{}", module.ptx_header(target), ptx))
}

/// One ptxas run on a PTX text.
#[derive(Debug)]
pub struct PtxasReport {
    /// ptxas's stderr/stdout (`-v`).
    pub log: String,
    /// Per entry: (stack frame bytes, spill store bytes, spill load bytes, registers).
    pub functions: BTreeMap<String, (u64, u64, u64, u64)>,
    /// nvdisasm's SASS, per function.
    pub sass: BTreeMap<String, Vec<String>>,
}

/// Assembles `ptx` for `target` with `ptxas -v`, parses the resource report and disassembles
/// the cubin.
pub fn assemble(
    tools: &Tools,
    tc: Toolchain,
    target: Target,
    ptx: &str,
) -> Result<PtxasReport, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ptx_path = dir.path().join("k.ptx");
    let cubin = dir.path().join("k.cubin");
    std::fs::write(&ptx_path, ptx).map_err(|e| e.to_string())?;
    let out = Command::new(tools.ptxas(tc))
        .arg("-v")
        .arg(format!("-arch={}", target.name()))
        .arg(&ptx_path)
        .arg("-o")
        .arg(&cubin)
        .output()
        .map_err(|e| format!("running {}: {e}", tools.ptxas(tc).display()))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("ptxas failed ({}):\n{log}", out.status));
    }
    let functions = parse_ptxas(&log);
    let dis = Command::new(tools.nvdisasm())
        .arg(&cubin)
        .output()
        .map_err(|e| format!("running {}: {e}", tools.nvdisasm().display()))?;
    if !dis.status.success() {
        return Err(format!(
            "nvdisasm failed: {}",
            String::from_utf8_lossy(&dis.stderr)
        ));
    }
    let sass = split_sass(&String::from_utf8_lossy(&dis.stdout));
    Ok(PtxasReport {
        log,
        functions,
        sass,
    })
}

/// Per-function resources from `ptxas -v`.
pub fn parse_ptxas(log: &str) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let num_before = |line: &str, what: &str| -> Option<u64> {
        let idx = line.find(what)?;
        line[..idx].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            current = Some(rest.trim().to_string());
            out.insert(rest.trim().to_string(), (u64::MAX, u64::MAX, u64::MAX, 0));
        } else if let Some(name) = &current {
            let entry = out.get_mut(name).expect("inserted above");
            if line.contains("stack frame") {
                entry.0 = num_before(line, "bytes stack frame").unwrap_or(u64::MAX);
                entry.1 = num_before(line, "bytes spill stores").unwrap_or(u64::MAX);
                entry.2 = num_before(line, "bytes spill loads").unwrap_or(u64::MAX);
            } else if line.contains("Used ") && line.contains(" registers") {
                entry.3 = line
                    .split("Used ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                current = None;
            }
        }
    }
    out
}

/// nvdisasm output split into functions (`.text.<name>:` sections), one instruction per item:
/// the mnemonic and its operands, without predicate, address or encoding comments.
pub fn split_sass(dis: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in dis.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix(".text.").and_then(|s| s.strip_suffix(':')) {
            current = Some(name.to_string());
            out.entry(name.to_string()).or_default();
            continue;
        }
        let Some(name) = &current else { continue };
        // Labels (`.L_x_3:`) stay in the list, so that loops can be found ([`hot_loop`]).
        if t.starts_with(".L") && t.ends_with(':') {
            out.get_mut(name)
                .expect("inserted above")
                .push(t.to_string());
            continue;
        }
        // Instruction lines look like `/*0040*/  @!P0 HFMA2.MMA R2, ... ;`
        let Some(rest) = t.strip_prefix("/*").and_then(|s| s.split_once("*/")) else {
            continue;
        };
        let mut ins = rest.1.trim();
        if ins.is_empty() {
            continue;
        }
        if ins.starts_with('@') {
            ins = ins.split_once(' ').map_or("", |(_, r)| r.trim());
        }
        out.get_mut(name)
            .expect("inserted above")
            .push(ins.trim_end_matches(';').trim().to_string());
    }
    out
}

/// The loops of a function in [`split_sass`]'s lines: for each branch back to an earlier
/// label, the instructions between the label and the branch.
pub fn loops(lines: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    for (end, ins) in lines.iter().enumerate() {
        if mnemonic(ins) != "BRA" {
            continue;
        }
        // `BRA `(.L_x_10) ;` once the predicate is gone.
        let Some(target) = ins
            .split_once('(')
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(t, _)| format!("{t}:"))
        else {
            continue;
        };
        if let Some(start) = lines[..end].iter().position(|l| *l == target) {
            out.push(&lines[start + 1..end]);
        }
    }
    out
}

/// Whether SASS mnemonic `m` is `want` or `want` with more `.` suffixes.
pub fn mnemonic_matches(m: &str, want: &str) -> bool {
    m == want || (m.starts_with(want) && m[want.len()..].starts_with('.'))
}

/// The mnemonic of one instruction line from [`split_sass`].
pub fn mnemonic(ins: &str) -> &str {
    ins.split_whitespace().next().unwrap_or("")
}

/// The body of one `.entry name(` in a PTX text, up to the next entry.
pub fn ptx_entry<'a>(ptx: &'a str, name: &str) -> Option<&'a str> {
    let start = ptx.find(&format!(".entry {name}("))?;
    let rest = &ptx[start..];
    let end = rest[1..].find(".entry ").map_or(rest.len(), |i| i + 1);
    Some(&rest[..end])
}

/// Every (module, target) with its toolchain, in registry order.
pub fn all_builds() -> Vec<(&'static Module, Target)> {
    ModuleId::ALL
        .iter()
        .flat_map(|id| {
            let m = id.module();
            m.shipped.iter().map(move |(t, _)| (m, *t))
        })
        .collect()
}
