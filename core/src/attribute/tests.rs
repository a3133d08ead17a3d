use std::collections::BTreeMap;

use super::*;

/// Process facts from a table (the file-reading side is tested in `procfs`).
struct Table(BTreeMap<u32, ProcInfo>);

impl ProcSource for Table {
    fn info(&self, pid: u32) -> Option<ProcInfo> {
        self.0.get(&pid).cloned()
    }
}

/// (pid, ppid, uid, comm, Slurm job from the cgroup, GPUCOST_JOB_ID)
type Row<'a> = (u32, u32, u32, &'a str, Option<&'a str>, Option<&'a str>);

fn table(rows: &[Row<'_>]) -> Table {
    Table(
        rows.iter()
            .map(|(pid, ppid, uid, comm, slurm, env)| {
                (
                    *pid,
                    ProcInfo {
                        pid: *pid,
                        ppid: *ppid,
                        uid: *uid,
                        comm: comm.to_string(),
                        slurm_job: slurm.map(str::to_string),
                        env_job_id: env.map(str::to_string),
                        ..ProcInfo::default()
                    },
                )
            })
            .collect(),
    )
}

fn procs(list: &[(u32, Option<u64>)]) -> Vec<ProcessUse> {
    list.iter()
        .map(|(pid, mem)| ProcessUse {
            pid: *pid,
            used_memory_bytes: *mem,
            sm_util_pct: None,
        })
        .collect()
}

fn reg(id: &str, root: Option<u32>, gpus: &[&str]) -> Registration {
    Registration {
        job_id: id.into(),
        root_pid: root,
        gpus: gpus.iter().map(|s| s.to_string()).collect(),
        uid: None,
    }
}

fn owners(a: &Attribution, gpu: usize) -> Vec<(&str, f64)> {
    a.owners[gpu]
        .iter()
        .map(|(id, w)| (id.as_str(), *w))
        .collect()
}

#[test]
fn identity_priority_and_shares() {
    let t = table(&[
        (1, 0, 0, "init", None, None),
        (100, 1, 1001, "gpucost", None, None),
        (101, 100, 1001, "torchrun", None, None),
        (102, 101, 1001, "python", Some("555"), Some("env-job")), // registered beats all
        (200, 1, 1002, "python", Some("555"), Some("env-job")),   // slurm beats env
        (300, 1, 1003, "python", None, Some("sweep-7")),          // env
        (400, 1, 1004, "python", None, None),                     // unattributed
    ]);
    let g0 = procs(&[(102, Some(3 << 30)), (200, Some(1 << 30))]);
    let g1 = procs(&[(300, Some(1 << 30)), (400, None)]);
    let g2 = procs(&[(999, Some(1 << 30))]); // not in our /proc (another pid namespace)
    let gpus = [
        GpuInput {
            index: 0,
            uuid: "GPU-0",
            processes: &g0,
        },
        GpuInput {
            index: 1,
            uuid: "GPU-1",
            processes: &g1,
        },
        GpuInput {
            index: 2,
            uuid: "GPU-2",
            processes: &g2,
        },
    ];
    let a = attribute(
        &gpus,
        &t,
        &[reg("run-1", Some(100), &[])],
        &JobOwners::new(),
        &[],
        &JobMap::new(),
    );
    // GPU 0: by memory share, 3 GiB vs 1 GiB.
    assert_eq!(owners(&a, 0), vec![("555", 0.25), ("run-1", 0.75)]);
    // GPU 1: one process's memory is unknown, so equal shares.
    assert_eq!(
        owners(&a, 1),
        vec![("sweep-7", 0.5), ("unattributed:400", 0.5)]
    );
    assert_eq!(owners(&a, 2), vec![("unattributed:999", 1.0)]);
    assert_eq!(a.found["555"].scheduler, Scheduler::Slurm);
    assert_eq!(a.found["555"].uid, Some(1002));
    assert_eq!(a.found["sweep-7"].scheduler, Scheduler::Env);
    assert_eq!(a.found["unattributed:400"].name, "python");
    assert!(
        !a.found.contains_key("run-1"),
        "registered jobs are known already"
    );
}

#[test]
fn kubernetes_pod_owns_its_gpu_and_processes_on_it() {
    let t = table(&[(500, 1, 0, "python", None, Some("ignored"))]);
    let g0 = procs(&[(500, Some(1))]);
    let none = procs(&[]);
    let pods = [
        PodGpu {
            namespace: "ml".into(),
            pod: "train-0".into(),
            container: "main".into(),
            device_id: "GPU-0".into(),
            pod_uid: None,
            job: None,
        },
        PodGpu {
            namespace: "ml".into(),
            pod: "idle-1".into(),
            container: "main".into(),
            device_id: "GPU-1".into(),
            pod_uid: None,
            job: None,
        },
    ];
    let gpus = [
        GpuInput {
            index: 0,
            uuid: "GPU-0",
            processes: &g0,
        },
        GpuInput {
            index: 1,
            uuid: "GPU-1",
            processes: &none,
        },
        GpuInput {
            index: 2,
            uuid: "GPU-2",
            processes: &none,
        },
    ];
    let a = attribute(&gpus, &t, &[], &JobOwners::new(), &pods, &JobMap::new());
    assert_eq!(owners(&a, 0), vec![("ml/train-0", 1.0)]);
    // Allocated but idle: the pod holds it with no process.
    assert_eq!(owners(&a, 1), vec![("ml/idle-1", 1.0)]);
    assert!(owners(&a, 2).is_empty(), "unallocated");
    assert_eq!(a.found["ml/idle-1"].scheduler, Scheduler::Kubernetes);
    assert_eq!(a.found["ml/idle-1"].labels["namespace"], "ml");
}

#[test]
fn slurm_mapping_directory_and_registered_allocations_hold_idle_gpus() {
    let t = table(&[]);
    let none = procs(&[]);
    let gpus = [
        GpuInput {
            index: 0,
            uuid: "GPU-0",
            processes: &none,
        },
        GpuInput {
            index: 1,
            uuid: "GPU-1",
            processes: &none,
        },
        GpuInput {
            index: 2,
            uuid: "GPU-2",
            processes: &none,
        },
    ];
    let map = JobMap::from([
        ("0".to_string(), vec!["77".to_string()]),
        (
            "GPU-1".to_string(),
            vec!["78".to_string(), "79".to_string()],
        ),
    ]);
    let a = attribute(
        &gpus,
        &t,
        &[reg("run-9", None, &["2"])],
        &JobOwners::new(),
        &[],
        &map,
    );
    assert_eq!(owners(&a, 0), vec![("77", 1.0)]);
    assert_eq!(owners(&a, 1), vec![("78", 0.5), ("79", 0.5)]);
    assert_eq!(owners(&a, 2), vec![("run-9", 1.0)]);
    assert_eq!(a.found["78"].scheduler, Scheduler::Slurm);
}

#[test]
fn mapped_gpu_attributes_its_processes_to_the_single_mapped_job() {
    // A process outside any Slurm cgroup (e.g. cgroups not confined) on a GPU the prolog mapped.
    let t = table(&[(600, 1, 1001, "python", None, None)]);
    let g0 = procs(&[(600, Some(5))]);
    let gpus = [GpuInput {
        index: 0,
        uuid: "GPU-0",
        processes: &g0,
    }];
    let map = JobMap::from([("0".to_string(), vec!["80".to_string()])]);
    let a = attribute(&gpus, &t, &[], &JobOwners::new(), &[], &map);
    assert_eq!(owners(&a, 0), vec![("80", 1.0)]);
    assert_eq!(a.found["80"].uid, Some(1001));
}

#[test]
fn sm_utilization_share_beats_memory_share() {
    let t = table(&[
        (10, 1, 0, "a", None, Some("a")),
        (11, 10, 0, "a-worker", None, Some("a")),
        (20, 1, 0, "b", None, Some("b")),
    ]);
    let use_ = |pid, mem, sm| ProcessUse {
        pid,
        used_memory_bytes: Some(mem),
        sm_util_pct: sm,
    };
    // Job a: 50% + 10% of the SMs with little memory; job b: 20% with a lot.
    let g0 = [
        use_(10, 1 << 20, Some(50)),
        use_(11, 0, Some(10)),
        use_(20, 30 << 30, Some(20)),
    ];
    // One process without a per-process figure: memory decides.
    let g1 = [use_(10, 3 << 30, Some(50)), use_(20, 1 << 30, None)];
    let gpus = [
        GpuInput {
            index: 0,
            uuid: "GPU-0",
            processes: &g0,
        },
        GpuInput {
            index: 1,
            uuid: "GPU-1",
            processes: &g1,
        },
    ];
    let a = attribute(&gpus, &t, &[], &JobOwners::new(), &[], &JobMap::new());
    assert_eq!(owners(&a, 0), vec![("a", 0.75), ("b", 0.25)]);
    assert_eq!(owners(&a, 1), vec![("a", 0.75), ("b", 0.25)]);
}

/// Issue 13: a user who registers pid 1 (everyone's ancestor) must not take over the node's
/// billing; a user's registration claims only that user's processes.
#[test]
fn a_users_registration_claims_only_that_users_processes() {
    let t = table(&[
        (1, 0, 0, "init", None, None),
        (200, 1, 1001, "python", Some("555"), None), // alice's Slurm job
        (300, 1, 1002, "python", None, None),        // mallory's own process
    ]);
    let g0 = procs(&[(200, Some(1 << 30))]);
    let g1 = procs(&[(300, Some(1 << 30))]);
    let gpus = [
        GpuInput {
            index: 0,
            uuid: "GPU-0",
            processes: &g0,
        },
        GpuInput {
            index: 1,
            uuid: "GPU-1",
            processes: &g1,
        },
    ];
    let squat = Registration {
        uid: Some(1002),
        ..reg("x", Some(1), &[])
    };
    let a = attribute(
        &gpus,
        &t,
        std::slice::from_ref(&squat),
        &JobOwners::new(),
        &[],
        &JobMap::new(),
    );
    assert_eq!(owners(&a, 0), vec![("555", 1.0)], "alice's job stays hers");
    assert_eq!(owners(&a, 1), vec![("x", 1.0)], "mallory's process is hers");
    // Root's registration of pid 1 does claim everything below it (root is trusted).
    let root = reg("all", Some(1), &[]);
    let a = attribute(&gpus, &t, &[root], &JobOwners::new(), &[], &JobMap::new());
    assert_eq!(owners(&a, 0), vec![("all", 1.0)]);
}

/// Issue 13: `GPUCOST_JOB_ID=<someone else's job>` in a process's environment does not bill the
/// process to that job.
#[test]
fn an_environment_job_id_joins_only_a_job_of_the_same_user() {
    let t = table(&[
        (1, 0, 0, "init", None, None),
        (300, 1, 1002, "python", None, Some("alice-run")),
        (301, 1, 1001, "python", None, Some("alice-run")),
        (302, 1, 1002, "python", None, Some("shared")),
        (303, 1, 1001, "python", None, Some("shared")),
    ]);
    let g0 = procs(&[(300, Some(1 << 30)), (301, Some(1 << 30))]);
    let g1 = procs(&[(302, Some(1 << 30)), (303, Some(1 << 30))]);
    let gpus = [
        GpuInput {
            index: 0,
            uuid: "GPU-0",
            processes: &g0,
        },
        GpuInput {
            index: 1,
            uuid: "GPU-1",
            processes: &g1,
        },
    ];
    let known = JobOwners::from([("alice-run".to_string(), 1001)]);
    let a = attribute(&gpus, &t, &[], &known, &[], &JobMap::new());
    assert_eq!(
        owners(&a, 0),
        vec![("alice-run", 0.5), ("unattributed:300", 0.5)],
        "mallory's process is hers alone"
    );
    // A job nobody owned yet: the first process found owns it, the other user's does not join.
    assert_eq!(
        owners(&a, 1),
        vec![("shared", 0.5), ("unattributed:303", 0.5)]
    );
    assert_eq!(a.found["shared"].uid, Some(1002));
}

#[test]
fn a_user_may_claim_only_their_own_process_and_no_one_elses_below_it() {
    let t = table(&[
        (1, 0, 0, "init", None, None),
        (50, 1, 1002, "bash", None, None),
        (60, 50, 1002, "python", None, None),
        (70, 50, 1001, "sudo-ed", None, None),
    ]);
    // (pid, uid, GPU processes) -> refused with this, or allowed.
    let cases: [(u32, u32, &[u32], Option<&str>); 6] = [
        (60, 1002, &[60], None),
        (50, 1002, &[60], None),
        (1, 1002, &[], Some("belongs to uid 0")),
        (60, 1001, &[], Some("belongs to uid 1002")),
        (50, 1002, &[60, 70], Some("ancestor of process 70")),
        (99, 1002, &[], Some("no such process")),
    ];
    for (pid, uid, gpu_pids, want) in cases {
        let got = check_claim(&t, pid, uid, gpu_pids);
        match want {
            None => assert_eq!(got, Ok(()), "pid {pid} uid {uid}"),
            Some(w) => assert!(
                got.as_ref().unwrap_err().contains(w),
                "pid {pid} uid {uid}: {got:?}"
            ),
        }
    }
}

/// Issue 15: pods sharing GPUs. A process's pod comes from its cgroup (pod UID); the pods come
/// from the kubelet with their devices (`GPU-…::N` time-slicing replicas, MIG devices).
mod sharing {
    use super::*;

    const UID_A: &str = "0f9a2c4e-5b1d-4c3a-9e8f-7a6b5c4d3e2f";
    const UID_B: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
    const UID_MONITOR: &str = "11111111-2222-4333-8444-555555555555";

    fn pod(name: &str, device: &str, uid: Option<&str>) -> PodGpu {
        PodGpu {
            namespace: "ml".into(),
            pod: name.into(),
            container: "main".into(),
            device_id: device.into(),
            pod_uid: uid.map(str::to_string),
            job: None,
        }
    }

    /// Processes in the pods' cgroups: (pid, pod UID).
    fn in_pods(rows: &[(u32, Option<&str>)]) -> Table {
        Table(
            rows.iter()
                .map(|(pid, uid)| {
                    (
                        *pid,
                        ProcInfo {
                            pid: *pid,
                            ppid: 1,
                            comm: "python".into(),
                            pod_uid: uid.map(str::to_string),
                            ..ProcInfo::default()
                        },
                    )
                })
                .collect(),
        )
    }

    /// (pid, SM %, memory)
    fn busy(list: &[(u32, u32, u64)]) -> Vec<ProcessUse> {
        list.iter()
            .map(|(pid, sm, mem)| ProcessUse {
                pid: *pid,
                used_memory_bytes: Some(*mem),
                sm_util_pct: Some(*sm),
            })
            .collect()
    }

    fn one_gpu<'a>(uuid: &'a str, p: &'a [ProcessUse]) -> [GpuInput<'a>; 1] {
        [GpuInput {
            index: 0,
            uuid,
            processes: p,
        }]
    }

    fn run(t: &Table, gpus: &[GpuInput<'_>], pods: &[PodGpu]) -> Attribution {
        attribute(gpus, t, &[], &JobOwners::new(), pods, &JobMap::new())
    }

    #[test]
    fn two_pods_time_slicing_a_gpu_pay_their_own_processes_shares() {
        let t = in_pods(&[(500, Some(UID_A)), (501, Some(UID_A)), (600, Some(UID_B))]);
        // Pod a: two processes at 40% and 20% SM; pod b: one at 20%.
        let p = busy(&[(500, 40, 1 << 30), (501, 20, 1 << 30), (600, 20, 8 << 30)]);
        let pods = [
            pod("a", "GPU-0::0", Some(UID_A)),
            pod("b", "GPU-0::1", Some(UID_B)),
        ];
        let a = run(&t, &one_gpu("GPU-0", &p), &pods);
        assert_eq!(owners(&a, 0), vec![("ml/a", 0.75), ("ml/b", 0.25)]);
        assert_eq!(a.found["ml/b"].scheduler, Scheduler::Kubernetes);
    }

    /// Before, the first pod listed took the whole GPU.
    #[test]
    fn the_first_pod_no_longer_takes_all() {
        let t = in_pods(&[(600, Some(UID_B))]);
        let p = busy(&[(600, 50, 1 << 30)]);
        let pods = [
            pod("a", "GPU-0::0", Some(UID_A)),
            pod("b", "GPU-0::1", Some(UID_B)),
        ];
        let a = run(&t, &one_gpu("GPU-0", &p), &pods);
        assert_eq!(owners(&a, 0), vec![("ml/b", 1.0)]);
    }

    /// MPS clients are listed by NVML as processes of their own pods (the MPS list), and bind
    /// to their pods like any process; so do the replicas of a shared MIG device.
    #[test]
    fn mps_clients_and_shared_mig_devices_bind_to_their_pods() {
        let t = in_pods(&[(700, Some(UID_A)), (800, Some(UID_B))]);
        let p = busy(&[(700, 30, 2 << 30), (800, 60, 2 << 30)]);
        let mig = "MIG-3f1e2d4c-5b6a-5789-8a7b-6c5d4e3f2a1b";
        let pods = [
            pod("a", &format!("{mig}::0"), Some(UID_A)),
            pod("b", &format!("{mig}::1"), Some(UID_B)),
        ];
        let a = run(&t, &one_gpu(mig, &p), &pods);
        let o = owners(&a, 0);
        assert_eq!(o[0].0, "ml/a");
        assert!((o[0].1 - 1.0 / 3.0).abs() < 1e-12, "{o:?}");
        assert!((o[1].1 - 2.0 / 3.0).abs() < 1e-12, "{o:?}");
    }

    /// A process in another pod's cgroup (one that sees every GPU without holding any) is not
    /// billed to the pods that hold the GPU.
    #[test]
    fn a_process_of_a_pod_that_holds_no_replica_is_not_the_holders() {
        let t = in_pods(&[(500, Some(UID_A)), (900, Some(UID_MONITOR))]);
        let p = busy(&[(500, 10, 1 << 30), (900, 90, 1 << 30)]);
        let pods = [pod("a", "GPU-0", Some(UID_A))];
        let a = run(&t, &one_gpu("GPU-0", &p), &pods);
        assert_eq!(
            owners(&a, 0),
            vec![("ml/a", 0.1), ("unattributed:900", 0.9)]
        );
    }

    /// Without the pods' UIDs (the kubelet's checkpoint unreadable), a process on a shared GPU
    /// is split evenly between the pods that hold it; an unshared GPU is its pod's, as before.
    #[test]
    fn without_pod_uids_a_shared_gpus_processes_are_split_evenly() {
        let t = in_pods(&[(500, Some(UID_A)), (600, None)]);
        let p = busy(&[(500, 60, 1 << 30), (600, 20, 1 << 30)]);
        let pods = [pod("a", "GPU-0::0", None), pod("b", "GPU-0::1", None)];
        let a = run(&t, &one_gpu("GPU-0", &p), &pods);
        assert_eq!(owners(&a, 0), vec![("ml/a", 0.5), ("ml/b", 0.5)]);

        let pods = [pod("a", "GPU-0", None)];
        let a = run(&t, &one_gpu("GPU-0", &p), &pods);
        assert_eq!(owners(&a, 0), vec![("ml/a", 1.0)]);
    }

    /// Only one pod's UID known: a process of the other pod goes to the pod whose UID is not
    /// known, never to the one whose UID differs.
    #[test]
    fn a_known_uid_excludes_its_pod() {
        let t = in_pods(&[(600, Some(UID_B))]);
        let p = busy(&[(600, 20, 1 << 30)]);
        let pods = [
            pod("a", "GPU-0::0", Some(UID_A)),
            pod("b", "GPU-0::1", None),
        ];
        let a = run(&t, &one_gpu("GPU-0", &p), &pods);
        assert_eq!(owners(&a, 0), vec![("ml/b", 1.0)]);
    }

    #[test]
    fn an_idle_shared_gpu_is_held_by_every_pod_and_containers_are_one_pod() {
        let t = in_pods(&[]);
        let none = busy(&[]);
        let pods = [
            pod("a", "GPU-0::0", Some(UID_A)),
            PodGpu {
                container: "sidecar".into(),
                ..pod("a", "GPU-0::2", None)
            },
            pod("b", "GPU-0::1", Some(UID_B)),
            pod("c", "GPU-1::0", None),
        ];
        let a = run(&t, &one_gpu("GPU-0", &none), &pods);
        assert_eq!(owners(&a, 0), vec![("ml/a", 0.5), ("ml/b", 0.5)]);
    }
}
