//! CI checks of the kernels without a GPU: the shipped PTX is fresh (and the generator that
//! refreshes it), every module compiles with the pinned NVRTC for each of its targets to exactly
//! the shipped PTX, ptxas assembles it without spills, and the SASS holds the instructions each
//! kernel exists for.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::registry::{self, Entry, Module, ModuleId, Target, Toolchain};
use crate::tools::{self, Nvrtc, PtxasReport, Tools};

const REGEN_ENV: &str = "GPUCOST_REGEN_PTX";

fn nvrtc(tools: &Tools, tc: Toolchain) -> &'static Nvrtc {
    static LIBS: OnceLock<BTreeMap<Toolchain, Nvrtc>> = OnceLock::new();
    let libs = LIBS.get_or_init(|| {
        Toolchain::ALL
            .iter()
            .map(|&tc| {
                let lib = Nvrtc::load(tools.nvrtc(tc)).unwrap_or_else(|e| panic!("{e}"));
                (tc, lib)
            })
            .collect()
    });
    &libs[&tc]
}

/// Fresh NVRTC output (with header) for every (module, target), compiled once per test binary,
/// two at a time.
fn generated(tools: &'static Tools) -> &'static BTreeMap<(&'static str, Target), String> {
    static OUT: OnceLock<BTreeMap<(&'static str, Target), String>> = OnceLock::new();
    OUT.get_or_init(|| {
        let builds = tools::all_builds();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = builds
                .chunks(builds.len().div_ceil(2))
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|&(m, t)| {
                                let lib = nvrtc(tools, m.toolchain);
                                let ptx = tools::generate(lib, m, t).unwrap_or_else(|e| {
                                    panic!("NVRTC on {} for {t}: {e}", m.file_name())
                                });
                                ((m.name, t), ptx)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("compile thread"))
                .collect()
        });
        results.into_iter().collect()
    })
}

/// ptxas + nvdisasm on every shipped PTX, once per test binary.
fn assembled(tools: &'static Tools) -> &'static BTreeMap<(&'static str, Target), PtxasReport> {
    static OUT: OnceLock<BTreeMap<(&'static str, Target), PtxasReport>> = OnceLock::new();
    OUT.get_or_init(|| {
        let builds = tools::all_builds();
        std::thread::scope(|s| {
            let handles: Vec<_> = builds
                .iter()
                .map(|&(m, t)| {
                    s.spawn(move || {
                        let ptx = shipped(m, t);
                        let report = tools::assemble(tools, m.toolchain, t, ptx)
                            .unwrap_or_else(|e| panic!("{}: {e}", m.ptx_path(t)));
                        ((m.name, t), report)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("ptxas thread"))
                .collect()
        })
    })
}

fn shipped(m: &Module, t: Target) -> &'static str {
    m.shipped
        .iter()
        .find(|(target, _)| *target == t)
        .map(|(_, ptx)| *ptx)
        .expect("registry lists the target")
}

/// Fails when a shipped PTX file was not generated from the current source, toolchain and
/// options. With `GPUCOST_REGEN_PTX=1` it regenerates them first (this is the generator):
///
/// ```text
/// bash scripts/install-cuda-tools.sh
/// GPUCOST_REGEN_PTX=1 cargo test -p gpucost-kernels ptx_is_fresh
/// ```
#[test]
fn ptx_is_fresh() {
    if std::env::var(REGEN_ENV).is_ok_and(|v| v == "1") {
        let tools = Tools::required().expect("the generator needs the CUDA tools");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for ((name, target), ptx) in generated(tools) {
            let m = registry::MODULES.iter().find(|m| m.name == *name).unwrap();
            let path = root.join(m.ptx_path(*target));
            std::fs::write(&path, ptx).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            eprintln!("wrote {}", path.display());
            assert_eq!(
                registry::recorded_fingerprint(ptx),
                Some(m.fingerprint(*target))
            );
        }
        return;
    }
    let mut stale = Vec::new();
    for (m, t) in tools::all_builds() {
        if registry::recorded_fingerprint(shipped(m, t)) != Some(m.fingerprint(t)) {
            stale.push(m.ptx_path(t));
        }
    }
    assert!(
        stale.is_empty(),
        "stale PTX (kernels/{}): its source, toolchain or options changed since it was \
         generated.\nRegenerate: bash scripts/install-cuda-tools.sh && \
         {REGEN_ENV}=1 cargo test -p gpucost-kernels ptx_is_fresh",
        stale.join(", kernels/")
    );
}

/// Every module compiles with its pinned NVRTC for each of its targets, to exactly the shipped
/// PTX, with the pinned PTX ISA version and the instructions each kernel asks for.
#[test]
fn nvrtc_compiles_every_module_to_the_shipped_ptx() {
    let Some(tools) = Tools::required() else {
        return;
    };
    for tc in Toolchain::ALL {
        assert_eq!(
            nvrtc(tools, tc).version(),
            tc.nvrtc_version(),
            "{} is not the pinned NVRTC",
            tools.nvrtc(tc).display()
        );
    }
    for (m, t) in tools::all_builds() {
        let fresh = &generated(tools)[&(m.name, t)];
        let (isa_major, isa_minor) = m.toolchain.ptx_isa();
        let version = format!("\n.version {isa_major}.{isa_minor}\n");
        assert!(
            fresh.contains(&version),
            "{} {t}: not PTX ISA {isa_major}.{isa_minor}",
            m.name
        );
        let target_line = format!("\n.target {}\n", t.name());
        assert!(
            fresh.contains(&target_line),
            "{} {t}: no `{target_line}`",
            m.name
        );
        assert!(
            fresh == shipped(m, t),
            "kernels/{} differs from what NVRTC makes of the source now; regenerate it \
             ({REGEN_ENV}=1 cargo test -p gpucost-kernels ptx_is_fresh)",
            m.ptx_path(t)
        );
        for e in m.entries {
            let body = tools::ptx_entry(fresh, e.name)
                .unwrap_or_else(|| panic!("{} {t}: no entry {}", m.name, e.name));
            for want in e.ptx {
                assert!(
                    body.contains(want),
                    "{} {t}: {} lacks `{want}`",
                    m.name,
                    e.name
                );
            }
        }
    }
}

/// The guards: a module compiled for a target below its minimum stops with its `#error`.
#[test]
fn nvrtc_refuses_targets_below_the_minimum() {
    let Some(tools) = Tools::required() else {
        return;
    };
    for (m, below) in [
        ("fma", "compute_75"),
        ("mma", "compute_75"),
        ("mma_fp8", "compute_86"),
        ("wgmma", "compute_90"),
        ("dmma", "compute_90"),
        ("memory", "compute_75"),
    ] {
        let m = registry::MODULES.iter().find(|x| x.name == m).unwrap();
        let err = nvrtc(tools, m.toolchain)
            .compile(m.source, &m.file_name(), &registry::compile_options(below))
            .expect_err(below);
        assert!(err.contains("#error"), "{} {below}: {err}", m.name);
    }
}

/// ptxas assembles every shipped PTX with no spills and no stack frame, without warnings (it
/// warns when it has to serialize wgmma), and the SASS holds each kernel's instructions.
#[test]
fn ptxas_no_spills_and_sass_has_the_intended_instructions() {
    let Some(tools) = Tools::required() else {
        return;
    };
    let mut failures = Vec::new();
    for (m, t) in tools::all_builds() {
        let report = &assembled(tools)[&(m.name, t)];
        if report.log.contains("warning") {
            failures.push(format!("{} {t}: ptxas warned:\n{}", m.name, report.log));
        }
        for e in m.entries {
            let Some(&(stack, stores, loads, regs)) = report.functions.get(e.name) else {
                failures.push(format!(
                    "{} {t}: ptxas reported nothing for {}",
                    m.name, e.name
                ));
                continue;
            };
            if (stack, stores, loads) != (0, 0, 0) {
                failures.push(format!(
                    "{} {t} {}: {stack} bytes stack frame, {stores} bytes spill stores, \
                     {loads} bytes spill loads ({regs} registers)",
                    m.name, e.name
                ));
            }
            let sass = report.sass.get(e.name).map(Vec::as_slice).unwrap_or(&[]);
            failures.extend(count_failures(m, t, e, sass));
            for bad in e.sass_forbidden {
                if let Some(ins) = sass
                    .iter()
                    .find(|ins| tools::mnemonic_matches(tools::mnemonic(ins), bad))
                {
                    failures.push(format!("{} {t} {}: SASS has `{ins}`", m.name, e.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Where the SASS of entry `e` of module `m` for target `t` does not hold the instructions it
/// should: for the compute kernels exactly what flops.rs counts per loop iteration, in the loop
/// and nowhere else; for the memory kernels at least the registry's minimum.
fn count_failures(m: &Module, t: Target, e: &Entry, sass: &[String]) -> Vec<String> {
    let mut failures = Vec::new();
    let claimed = claimed_per_iteration(m.name);
    for want in e.sass {
        let count = |lines: &[String]| {
            lines
                .iter()
                .filter(|ins| {
                    let mn = tools::mnemonic(ins);
                    want.mnemonics
                        .iter()
                        .any(|w| tools::mnemonic_matches(mn, w))
                })
                .count()
        };
        let (all, in_loop) = (
            count(sass),
            tools::loops(sass).into_iter().map(count).max().unwrap_or(0),
        );
        match claimed {
            // What flops.rs counts per loop iteration must be in the loop, exactly:
            // fewer and the compiler folded work the figure claims; more and the
            // figure undercounts. None outside it either.
            Some(n) if (in_loop, all) != (n, n) => failures.push(format!(
                "{} {t} {}: {in_loop} x {:?} in its loop ({all} in all), flops.rs \
                 counts {n} per iteration",
                m.name, e.name, want.mnemonics
            )),
            None if all < want.min => failures.push(format!(
                "{} {t} {}: {all} x {:?} in SASS, want >= {}",
                m.name, e.name, want.mnemonics, want.min
            )),
            _ => {}
        }
    }
    failures
}

/// The instructions per warp-level loop iteration (per thread for the FMA loops, per warp for
/// `mma.sync`, per warpgroup for `wgmma`) that the FLOP counts of `flops.rs` assume, derived
/// from those counts; `None` for the memory kernels, whose figure is bytes.
fn claimed_per_iteration(module: &str) -> Option<usize> {
    use crate::flops::{self, MmaShape};
    use crate::registry::shape;
    let per = |flops: f64, units: u32, each: f64| (flops / f64::from(units) / each) as usize;
    let s = MmaShape::M16N8K16;
    let w = MmaShape::M64N256K16;
    match module {
        "fma" => Some(per(
            flops::fma_launch_flops(1, 1, 1),
            shape::FMA_THREADS,
            2.0,
        )),
        "mma" | "mma_fp8" | "dmma" => Some(per(
            flops::mma_launch_flops(1, 1, s),
            shape::MMA_THREADS / 32,
            s.flops(),
        )),
        "wgmma" => Some(per(
            flops::wgmma_launch_flops(1, 1, w),
            shape::WG_THREADS / 128,
            w.flops(),
        )),
        _ => None,
    }
}

/// Issue 18, item 2: every compute kernel stamps its blocks' clock (`%clock64` and
/// `%globaltimer`, at the start and at the end) for every shipped target, so each row of the
/// benchmark has the clock its own launches ran at. Reads the shipped PTX: needs no tools.
#[test]
fn issue_18_every_compute_kernel_stamps_its_clock() {
    for (m, t) in tools::all_builds() {
        if claimed_per_iteration(m.name).is_none() {
            continue;
        }
        for e in m.entries {
            let body = tools::ptx_entry(shipped(m, t), e.name)
                .unwrap_or_else(|| panic!("{} {t}: no entry {}", m.name, e.name));
            for reg in ["%clock64", "%globaltimer"] {
                let n = body.matches(reg).count();
                assert_eq!(n, 2, "{} {t} {}: reads {reg} {n} times", m.name, e.name);
            }
        }
    }
}

#[test]
fn claims_per_iteration_follow_the_flop_counts() {
    assert_eq!(claimed_per_iteration("fma"), Some(256));
    assert_eq!(claimed_per_iteration("mma"), Some(128));
    assert_eq!(claimed_per_iteration("mma_fp8"), Some(128));
    assert_eq!(claimed_per_iteration("wgmma"), Some(16));
    assert_eq!(claimed_per_iteration("dmma"), Some(128));
    assert_eq!(claimed_per_iteration("memory"), None);
    // A loop is the stretch between a label and the branch back to it.
    let lines: Vec<String> = [
        ".L_x_1:",
        "HMMA.16816.F32 R0",
        "HMMA.16816.F32 R4",
        "BRA `(.L_x_1)",
        "HMMA.16816.F32 R8",
    ]
    .map(String::from)
    .to_vec();
    let loops = tools::loops(&lines);
    assert_eq!(loops.len(), 1);
    assert_eq!(loops[0].len(), 2);
}

/// The check catches what it exists for: `mma_fp8` assembled for Hopper keeps 16 of the 128
/// MMAs per iteration that flops.rs counts (ptxas turns the FP8 products into FP16 HMMA and
/// FADD, folding repeated ones), with a result that is still exact. That is why the registry
/// keeps it off sm_90.
#[test]
fn the_count_check_catches_folded_mmas() {
    let Some(tools) = Tools::required() else {
        return;
    };
    let m = ModuleId::MmaFp8.module();
    let report = tools::assemble(tools, m.toolchain, Target::Sm90a, shipped(m, Target::Sm89))
        .expect("ptxas assembles sm_89 PTX for sm_90a");
    let e = &m.entries[0];
    let failures = count_failures(m, Target::Sm90a, e, &report.sass[e.name]);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("counts 128 per iteration"),
        "{failures:?}"
    );
    assert!(m.availability((9, 0)).is_err());
    assert!(m.availability((10, 0)).is_err());
    assert!(m.availability((8, 9)).is_ok());
}

#[test]
fn ptxas_and_sass_parsing() {
    let log = "ptxas info    : 0 bytes gmem\n\
               ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
               ptxas info    : Function properties for k\n    \
               8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
               ptxas info    : Used 58 registers, 388 bytes cmem[0]\n";
    let f = tools::parse_ptxas(log);
    assert_eq!(f["k"], (8, 4, 12, 58));

    let dis = "\t.text.k:\n\
               .L_x_0:\n\
               \x20       /*0000*/                   MOV R1, c[0x0][0x28] ;\n\
               \x20       /*0010*/              @!P0 HFMA2.MMA R2, -RZ, RZ, 0, 0 ;\n\
               \x20       /*0020*/                   HMMA.16816.F32.BF16 R4, R8, R12, R4 ;\n";
    let s = tools::split_sass(dis);
    // The label stays, for the loops.
    assert_eq!(s["k"].len(), 4);
    assert_eq!(s["k"][0], ".L_x_0:");
    assert_eq!(tools::mnemonic(&s["k"][2]), "HFMA2.MMA");
    assert!(tools::mnemonic_matches("HFMA2.MMA", "HFMA2"));
    assert!(tools::mnemonic_matches(
        "HMMA.16816.F32.BF16",
        "HMMA.16816.F32"
    ));
    assert!(!tools::mnemonic_matches(
        "HMMA.16816.F32X",
        "HMMA.16816.F32"
    ));
    assert!(tools::mnemonic_matches("LDG.E.128.CONSTANT", "LDG.E.128"));

    let ptx = ".visible .entry a(\n fma.rn.f32 \n}\n.visible .entry b(\n fma.rn.f64\n}\n";
    assert!(tools::ptx_entry(ptx, "a").unwrap().contains("f32"));
    assert!(!tools::ptx_entry(ptx, "a").unwrap().contains("f64"));
    assert!(tools::ptx_entry(ptx, "b").unwrap().contains("f64"));
    assert!(tools::ptx_entry(ptx, "c").is_none());
}
