//! Where job identities come from: process facts from `/proc` ([`procfs`]), the GPU -> job
//! directory a Slurm prolog writes ([`job_map`]), the kubelet's pod-resources API
//! ([`kubelet`]), this node's pods through the Kubernetes API ([`kube_api`]: owners, labels,
//! how they ended), and how a Slurm job ended ([`slurm`]: the epilog's environment, `scontrol`). Each reads and hands plain facts to `gpucost_core::attribute`, which decides.

pub mod job_map;
pub mod kube_api;
pub mod kubelet;
pub mod procfs;
pub mod slurm;

/// The user name of a uid, from the system's user database; the uid as text when unknown.
pub fn user_name(uid: u32) -> String {
    uzers::get_user_by_uid(uid).map_or_else(
        || uid.to_string(),
        |u| u.name().to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_has_a_name() {
        assert_eq!(super::user_name(0), "root");
        assert_eq!(super::user_name(4_000_000_000), "4000000000");
    }
}
