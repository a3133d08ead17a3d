//! Fixed facts about GPU products, looked up from the model name a scenario gives.

/// One product family: a substring of its NVML name and what NVML reports for it.
struct Product {
    name_contains: &'static str,
    compute_capability: (i32, i32),
    cuda_cores: Option<u32>,
    /// The PCI device id (the vendor id 0x10DE is added by [`pci_device_id`]).
    pci_device: u32,
}

/// Looked up in order, so a longer name comes before a name it contains ("A100" before "A10",
/// "H100 PCIe" before "H100", "L40S" before "L4").
#[rustfmt::skip]
const PRODUCTS: &[Product] = &[
    Product { name_contains: "GH200", compute_capability: (9, 0), cuda_cores: Some(16896), pci_device: 0x2342 },
    Product { name_contains: "H200", compute_capability: (9, 0), cuda_cores: Some(16896), pci_device: 0x2335 },
    Product { name_contains: "H100 PCIe", compute_capability: (9, 0), cuda_cores: Some(14592), pci_device: 0x2331 },
    Product { name_contains: "H100", compute_capability: (9, 0), cuda_cores: Some(16896), pci_device: 0x2330 },
    Product { name_contains: "B200", compute_capability: (10, 0), cuda_cores: None, pci_device: 0x2901 },
    Product { name_contains: "A100", compute_capability: (8, 0), cuda_cores: Some(6912), pci_device: 0x20B2 },
    Product { name_contains: "L40S", compute_capability: (8, 9), cuda_cores: Some(18176), pci_device: 0x26B9 },
    Product { name_contains: "L4", compute_capability: (8, 9), cuda_cores: Some(7424), pci_device: 0x27B8 },
    Product { name_contains: "A10", compute_capability: (8, 6), cuda_cores: Some(9216), pci_device: 0x2236 },
];

fn lookup(model: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| model.contains(p.name_contains))
}

/// CUDA compute capability (major, minor); 8.0 for a product not in the table.
pub fn compute_capability(model: &str) -> (i32, i32) {
    lookup(model).map_or((8, 0), |p| p.compute_capability)
}

/// CUDA cores, where the product is known and NVIDIA publishes the number.
pub fn cuda_cores(model: &str) -> Option<u32> {
    lookup(model).and_then(|p| p.cuda_cores)
}

/// Whether the product reports power averaged over a second: "Ampere (except GA100) or newer"
/// (nvml.h:2716, and nvml.h:6538-6540 for `nvmlDeviceGetPowerUsage`), i.e. compute capability
/// above 8.0 (GA100 is 8.0; a product not in the table counts as 8.0, the older side).
pub fn has_power_average(model: &str) -> bool {
    compute_capability(model) > (8, 0)
}

/// `pciDeviceId` as NVML packs it: the device id in the high half, NVIDIA's vendor id below.
pub fn pci_device_id(model: &str) -> u32 {
    let device = lookup(model).map_or(0x2330, |p| p.pci_device);
    (device << 16) | 0x10DE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_most_specific_product() {
        assert_eq!(compute_capability("NVIDIA H100 80GB HBM3"), (9, 0));
        assert_eq!(compute_capability("NVIDIA H200"), (9, 0));
        assert_eq!(compute_capability("NVIDIA GH200 480GB"), (9, 0));
        assert_eq!(compute_capability("NVIDIA B200"), (10, 0));
        assert_eq!(compute_capability("NVIDIA A100-SXM4-80GB"), (8, 0));
        assert_eq!(compute_capability("NVIDIA A10"), (8, 6));
        assert_eq!(compute_capability("NVIDIA L40S"), (8, 9));
        assert_eq!(compute_capability("NVIDIA L4"), (8, 9));
        assert_eq!(compute_capability("Tesla V100-SXM2-32GB"), (8, 0));
        assert_eq!(cuda_cores("NVIDIA A100-SXM4-80GB"), Some(6912));
        assert_eq!(cuda_cores("NVIDIA H100 PCIe"), Some(14592));
        assert_eq!(cuda_cores("NVIDIA B200"), None);
        assert_eq!(pci_device_id("NVIDIA H100 80GB HBM3"), 0x2330_10DE);
        assert!(has_power_average("NVIDIA H100 80GB HBM3"));
        assert!(has_power_average("NVIDIA A10"));
        assert!(has_power_average("NVIDIA L4"));
        assert!(!has_power_average("NVIDIA A100-SXM4-80GB"));
        assert!(!has_power_average("Tesla V100-SXM2-32GB"));
    }
}
