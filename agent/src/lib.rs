//! gpucost: what each training run on a GPU node costs, where the money goes, how well it uses
//! the hardware. The modules follow the data: [`sample`] reads the GPUs, [`account`] turns
//! readings into totals, [`snapshot`] is what the sampler publishes, [`export`] renders it.
//! [`config`] and [`agent`] set it all up.

pub mod agent;
pub mod api;
pub mod cli;
pub mod export;
pub mod identity;
pub mod ledger;
pub mod node;
pub mod notify;
pub mod record;
pub mod sample;
pub mod snapshot;
