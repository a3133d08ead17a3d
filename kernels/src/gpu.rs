//! The CUDA libraries and one GPU: probing the libraries before cudarc touches them (cudarc
//! panics when it cannot load one), the device's context and stream, and the kernel modules,
//! loaded lazily: compiled by NVRTC for this device when NVRTC works, else the shipped PTX.
//!
//! Where libraries come from: the dynamic loader's usual search (cudarc tries
//! `libcuda.so`, `libcuda.so.1`, `libnvrtc.so.12`, ...), after preloading any file named by
//! `GPUCOST_NVRTC_LIB`, `GPUCOST_CUBLAS_LIB` or `GPUCOST_CUBLASLT_LIB` (for example the ones a
//! PyTorch install carries): a library already loaded under its soname is what a later
//! `dlopen` by that name returns. `GPUCOST_NVRTC=0` turns run-time compilation off.

use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

use crate::registry::{self, ModuleId};

/// Which libraries could be loaded.
#[derive(Debug, Clone)]
pub struct Libraries {
    /// NVRTC's version, when it loads and answers.
    pub nvrtc: Option<(i32, i32)>,
    pub cublas: bool,
    pub cublaslt: bool,
    /// Libraries named by `GPUCOST_*_LIB` that could not be loaded.
    pub problems: Vec<String>,
}

/// The library names cudarc tries for `lib` (e.g. "cuda"), for messages.
pub fn candidates(lib: &str) -> Vec<String> {
    let mut names = cudarc::get_lib_name_candidates(lib);
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Loads the file named by `env`, if set, and keeps it loaded.
fn preload(env: &str) -> Result<(), String> {
    static KEEP: Mutex<Vec<libloading::Library>> = Mutex::new(Vec::new());
    let Ok(path) = std::env::var(env) else {
        return Ok(());
    };
    // SAFETY: loading a CUDA library runs its initializers, which have no preconditions. The
    // handle is kept for the life of the process, so code from it is never unloaded.
    let lib =
        unsafe { libloading::Library::new(&path) }.map_err(|e| format!("{env}={path}: {e}"))?;
    KEEP.lock().unwrap_or_else(|e| e.into_inner()).push(lib);
    Ok(())
}

/// Whether libcuda can be loaded (by the names in [`candidates`]).
pub fn driver_present() -> bool {
    // SAFETY: is_culib_present only dlopens candidate names and drops the handles.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Probes the optional libraries once per process.
pub fn libraries() -> &'static Libraries {
    static LIBS: OnceLock<Libraries> = OnceLock::new();
    LIBS.get_or_init(|| {
        // cuBLASLt before cuBLAS, which links against it.
        let problems = [
            "GPUCOST_NVRTC_LIB",
            "GPUCOST_CUBLASLT_LIB",
            "GPUCOST_CUBLAS_LIB",
        ]
        .into_iter()
        .filter_map(|env| preload(env).err())
        .collect();
        let nvrtc_wanted = std::env::var("GPUCOST_NVRTC").map_or(true, |v| v != "0");
        // SAFETY (all three): is_culib_present only dlopens candidate names.
        let nvrtc = (nvrtc_wanted && unsafe { cudarc::nvrtc::sys::is_culib_present() })
            .then(nvrtc_version)
            .flatten();
        Libraries {
            nvrtc,
            cublas: unsafe { cudarc::cublas::sys::is_culib_present() },
            cublaslt: unsafe { cudarc::cublaslt::sys::is_culib_present() },
            problems,
        }
    })
}

fn nvrtc_version() -> Option<(i32, i32)> {
    // cudarc panics on a missing symbol; a library that is present but broken becomes "absent".
    std::panic::catch_unwind(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through valid pointers; the library is present.
        let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
    })
    .ok()
    .flatten()
}

/// How a module got onto the GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Compiled at run time by NVRTC `(major, minor)` for this device.
    Nvrtc(i32, i32),
    /// The PTX shipped in the binary for this target; with why NVRTC was not used, when it
    /// was tried.
    Shipped(registry::Target, Option<String>),
}

/// A module on the GPU and where it came from.
pub type Loaded = (Arc<CudaModule>, Origin);

/// One GPU, with its context, the stream everything runs on, and its modules.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub name: String,
    pub cc: (u32, u32),
    pub sm_count: u32,
    modules: [OnceLock<Result<Loaded, String>>; 5],
}

impl Gpu {
    /// Opens device `ordinal` (the driver must be present: see [`driver_present`]).
    pub fn open(ordinal: usize) -> Result<Gpu, cudarc::driver::DriverError> {
        let ctx = CudaContext::new(ordinal)?;
        let (major, minor) = ctx.compute_capability()?;
        let sm_count = ctx.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )?;
        let name = ctx.name()?;
        let stream = ctx.default_stream();
        Ok(Gpu {
            ctx,
            stream,
            name,
            cc: (major as u32, minor as u32),
            sm_count: sm_count as u32,
            modules: Default::default(),
        })
    }

    /// The module, loaded on first use.
    pub fn module(&self, id: ModuleId) -> Result<&Loaded, String> {
        self.modules[id as usize]
            .get_or_init(|| self.load(id))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A kernel of a module.
    pub fn function(&self, id: ModuleId, entry: &str) -> Result<CudaFunction, String> {
        let (module, _) = self.module(id)?;
        module
            .load_function(entry)
            .map_err(|e| format!("{entry} in {}: {e}", id.module().name))
    }

    fn load(&self, id: ModuleId) -> Result<Loaded, String> {
        let m = id.module();
        m.availability(self.cc)?;
        let mut notes = Vec::new();
        if let Some((major, minor)) = libraries().nvrtc {
            match self.compile(m) {
                Ok(module) => return Ok((module, Origin::Nvrtc(major, minor))),
                Err(e) => notes.push(e),
            }
        }
        let (target, ptx) = m
            .shipped_for(self.cc)
            .ok_or_else(|| format!("no shipped PTX runs on sm_{}{}", self.cc.0, self.cc.1))?;
        match self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx)) {
            Ok(module) => Ok((module, Origin::Shipped(target, notes.pop()))),
            Err(e) => {
                notes.push(format!(
                    "loading the shipped {} PTX (PTX ISA {}.{}, needs a {}+ driver): {e}",
                    target,
                    m.toolchain.ptx_isa().0,
                    m.toolchain.ptx_isa().1,
                    m.toolchain.min_driver()
                ));
                Err(notes.join("; "))
            }
        }
    }

    /// NVRTC for this device, then the driver loads the result. Fails (and the caller falls
    /// back to the shipped PTX) when NVRTC does not know the architecture, or writes a PTX ISA
    /// newer than this driver takes.
    fn compile(&self, m: &registry::Module) -> Result<Arc<CudaModule>, String> {
        let arch = m.runtime_arch(self.cc);
        let opts = cudarc::nvrtc::CompileOptions {
            options: registry::compile_options(&arch),
            name: Some(m.file_name()),
            ..Default::default()
        };
        let ptx = std::panic::catch_unwind(|| {
            cudarc::nvrtc::compile_ptx_with_opts(m.source, opts).map_err(|e| e.to_string())
        })
        .map_err(|_| "NVRTC panicked".to_string())?
        .map_err(|e| format!("NVRTC for {arch}: {e}"))?;
        self.ctx
            .load_module(ptx)
            .map_err(|e| format!("loading NVRTC's {arch} PTX: {e}"))
    }

    /// Where each loaded module came from, for reports.
    pub fn origins(&self) -> Vec<(&'static str, Origin)> {
        ModuleId::ALL
            .iter()
            .filter_map(|&id| {
                let (_, origin) = self.modules[id as usize].get()?.as_ref().ok()?;
                Some((id.module().name, origin.clone()))
            })
            .collect()
    }
}
