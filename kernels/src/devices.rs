//! Which CUDA device is the GPU NVML names.
//!
//! NVML numbers GPUs by PCI bus id; CUDA numbers them fastest first unless
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID` is set, and only those `CUDA_VISIBLE_DEVICES` lets it see,
//! renumbered from 0 (CUDA C Programming Guide, "CUDA Environment Variables"). So NVML's index
//! is not a CUDA ordinal: a benchmark opened "device N" could measure another GPU, perhaps a
//! busy one, and file the figures under the wrong UUID. A GPU is found by its UUID (the same 16
//! bytes in both APIs: `cuDeviceGetUuid`, `nvmlDeviceGetUUID`), or by its PCI address where
//! CUDA cannot tell a device's UUID. The matching is pure ([`find_ordinal`]); [`cuda_devices`]
//! asks the driver.

use std::fmt;

/// A PCI address, `domain:bus:device`, as both APIs give it in text (NVML's `busId`
/// `00000000:65:00.0` has an 8-digit domain, CUDA's `cuDeviceGetPCIBusId` `0000:65:00.0` a
/// 4-digit one; the function is 0 for GPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
}

impl PciAddress {
    /// Parses `[domain:]bus:device[.function]`, hexadecimal, any case.
    pub fn parse(text: &str) -> Option<PciAddress> {
        let text = text.trim();
        let text = text.split_once('.').map_or(text, |(a, _)| a);
        let parts: Vec<&str> = text.split(':').collect();
        let hex = |s: &str| {
            (!s.is_empty() && s.len() <= 8)
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (hex(d)?, hex(b)?, hex(v)?),
            [b, v] => (0, hex(b)?, hex(v)?),
            _ => return None,
        };
        Some(PciAddress {
            domain,
            bus,
            device,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}:{:02x}:{:02x}.0",
            self.domain, self.bus, self.device
        )
    }
}

/// One device as the CUDA driver enumerates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDevice {
    pub ordinal: usize,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, formatted as NVML formats the same bytes;
    /// `None` where the driver would not tell.
    pub uuid: Option<String>,
    pub pci: Option<PciAddress>,
}

/// The GPU a caller means, as NVML names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    /// NVML's UUID (`GPU-…`, or `MIG-…` for a MIG device).
    pub uuid: &'a str,
    /// NVML's PCI bus id, when the caller has it.
    pub pci: Option<PciAddress>,
}

/// The 16 bytes of a UUID in NVML's text form: `GPU-` then 8-4-4-4-12 lowercase hex digits.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// The 32 hex digits of a UUID, lowercase, without its `GPU-`/`MIG-` prefix and dashes: CUDA
/// gives a MIG device's UUID as bytes, which carry no prefix.
fn digits(uuid: &str) -> String {
    let u = uuid.trim();
    let u = u
        .strip_prefix("GPU-")
        .or_else(|| u.strip_prefix("MIG-"))
        .unwrap_or(u);
    u.chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Why no CUDA device is the GPU wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    pub uuid: String,
    /// What CUDA does see: (ordinal, UUID or PCI address).
    pub seen: Vec<(usize, String)>,
}

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no CUDA device is {}: ", self.uuid)?;
        if self.seen.is_empty() {
            write!(f, "CUDA sees no device")?;
        } else {
            let seen: Vec<String> = self
                .seen
                .iter()
                .map(|(o, id)| format!("{o} = {id}"))
                .collect();
            write!(f, "CUDA sees {}", seen.join(", "))?;
        }
        write!(
            f,
            " (CUDA_VISIBLE_DEVICES may hide it; a MIG instance is visible to CUDA only when \
             CUDA_VISIBLE_DEVICES names it)"
        )
    }
}

/// The ordinal of the CUDA device that is `wanted`: the one with its UUID; else, among devices
/// whose UUID CUDA could not read, the one at its PCI address. Never an index: with no match
/// the answer is [`NoMatch`], naming what CUDA sees.
pub fn find_ordinal(wanted: &Wanted<'_>, devices: &[CudaDevice]) -> Result<usize, NoMatch> {
    let want = digits(wanted.uuid);
    let by_uuid = devices
        .iter()
        .find(|d| d.uuid.as_deref().is_some_and(|u| digits(u) == want));
    let by_pci = || {
        let pci = wanted.pci?;
        devices
            .iter()
            .find(|d| d.uuid.is_none() && d.pci == Some(pci))
    };
    match by_uuid.or_else(by_pci) {
        Some(d) => Ok(d.ordinal),
        None => Err(NoMatch {
            uuid: wanted.uuid.to_string(),
            seen: devices
                .iter()
                .map(|d| {
                    let id = d
                        .uuid
                        .clone()
                        .or_else(|| d.pci.map(|p| p.to_string()))
                        .unwrap_or_else(|| "?".into());
                    (d.ordinal, id)
                })
                .collect(),
        }),
    }
}

/// Every device the CUDA driver sees, with its UUID and PCI address (the driver must be
/// initialized: `suite::device_count` first).
pub fn cuda_devices(count: usize) -> Vec<CudaDevice> {
    use cudarc::driver::result::device;
    use cudarc::driver::sys::CUdevice_attribute as A;
    (0..count)
        .map(|ordinal| {
            let dev = i32::try_from(ordinal)
                .ok()
                .and_then(|o| device::get(o).ok());
            let uuid = dev.and_then(|d| device::get_uuid(d).ok()).map(|u| {
                // c_char is i8 or u8 by platform: the same bits either way.
                format_uuid(&u.bytes.map(|b| b as u8))
            });
            let pci = dev.and_then(|d| {
                // SAFETY: `d` came from cuDeviceGet; the attributes are plain integers.
                let attr = |a| unsafe { device::get_attribute(d, a) }.ok();
                Some(PciAddress {
                    domain: u32::try_from(attr(A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID)?).ok()?,
                    bus: u32::try_from(attr(A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID)?).ok()?,
                    device: u32::try_from(attr(A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID)?).ok()?,
                })
            });
            CudaDevice { ordinal, uuid, pci }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "GPU-8ab4c2d0-1e3f-4a5b-9c8d-7e6f5a4b3c2d";
    const B: &str = "GPU-1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b";
    const C: &str = "GPU-5c6d7e8f-9a0b-4c1d-8e2f-3a4b5c6d7e8f";

    fn dev(ordinal: usize, uuid: Option<&str>, pci: &str) -> CudaDevice {
        CudaDevice {
            ordinal,
            uuid: uuid.map(str::to_string),
            pci: PciAddress::parse(pci),
        }
    }

    fn want<'a>(uuid: &'a str, pci: Option<&str>) -> Wanted<'a> {
        Wanted {
            uuid,
            pci: pci.and_then(PciAddress::parse),
        }
    }

    /// NVML index 0 is GPU A at bus 0x18, but CUDA (fastest first, or a CUDA_VISIBLE_DEVICES
    /// that lists C first) numbers C first: the ordinal follows the UUID, not the index.
    #[test]
    fn the_device_is_found_by_uuid_whatever_the_order() {
        let cuda = [
            dev(0, Some(C), "0000:b1:00.0"),
            dev(1, Some(A), "0000:18:00.0"),
            dev(2, Some(B), "0000:65:00.0"),
        ];
        assert_eq!(find_ordinal(&want(A, None), &cuda), Ok(1));
        assert_eq!(
            find_ordinal(&want(B, Some("00000000:65:00.0")), &cuda),
            Ok(2)
        );
        assert_eq!(find_ordinal(&want(C, None), &cuda), Ok(0));
        // Case and prefix do not matter: CUDA's bytes of a MIG device carry no `MIG-`.
        assert_eq!(
            find_ordinal(
                &want(&A.to_uppercase().replace("GPU-", "MIG-"), None),
                &cuda
            ),
            Ok(1)
        );
    }

    /// A PCI address decides only for devices whose UUID CUDA would not tell; a UUID that
    /// differs is another GPU, even at the address asked for.
    #[test]
    fn the_pci_address_is_the_fallback() {
        let cuda = [
            dev(0, None, "0000:65:00.0"),
            dev(1, Some(C), "0000:18:00.0"),
        ];
        assert_eq!(
            find_ordinal(&want(B, Some("00000000:65:00.0")), &cuda),
            Ok(0)
        );
        assert!(find_ordinal(&want(A, Some("00000000:18:00.0")), &cuda).is_err());
    }

    /// A GPU CUDA does not see (hidden by CUDA_VISIBLE_DEVICES, a MIG instance, another
    /// container's) is an error naming what CUDA sees, never a guess by index.
    #[test]
    fn no_match_is_a_clear_error() {
        let cuda = [
            dev(0, Some(C), "0000:b1:00.0"),
            dev(1, None, "0000:18:00.0"),
        ];
        let err = find_ordinal(&want(A, None), &cuda).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "no CUDA device is {A}: CUDA sees 0 = {C}, 1 = 00000000:18:00.0"
            )),
            "{msg}"
        );
        assert!(msg.contains("CUDA_VISIBLE_DEVICES"), "{msg}");
        let msg = find_ordinal(&want(A, None), &[]).unwrap_err().to_string();
        assert!(msg.contains("CUDA sees no device"), "{msg}");
    }

    #[test]
    fn uuids_and_pci_addresses_in_each_apis_text() {
        let bytes = [
            0x8a, 0xb4, 0xc2, 0xd0, 0x1e, 0x3f, 0x4a, 0x5b, 0x9c, 0x8d, 0x7e, 0x6f, 0x5a, 0x4b,
            0x3c, 0x2d,
        ];
        assert_eq!(format_uuid(&bytes), A);
        let nvml = PciAddress::parse("00000000:65:00.0").unwrap();
        assert_eq!(PciAddress::parse("0000:65:00.0"), Some(nvml));
        assert_eq!(PciAddress::parse("0000:65:00"), Some(nvml));
        assert_eq!(nvml.to_string(), "00000000:65:00.0");
        assert_eq!(
            PciAddress::parse("0001:B1:1F.0"),
            Some(PciAddress {
                domain: 1,
                bus: 0xb1,
                device: 0x1f
            })
        );
        for bad in ["", "65", "zz:00.0", "0:0:0:0", "123456789:00:00.0"] {
            assert_eq!(PciAddress::parse(bad), None, "{bad}");
        }
    }
}
