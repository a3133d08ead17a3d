//! The kubelet pod-resources API, v1 (service `v1.PodResourcesLister`): its messages, a tonic
//! client and a tonic server, all generated at build time from `proto/v1/api.proto`, the one
//! definition of that API in this workspace. The agent's kubelet client uses the client half,
//! the fake kubelet (`tests/fake-kubelet`) the server half, so the two cannot drift apart; the
//! test below checks the proto against bytes in the wire format, not against itself.
//!
//! `build.rs` parses the proto with protox, so building needs no `protoc`.

/// Protobuf package `v1`: the messages, [`v1::pod_resources_lister_client`] and
/// [`v1::pod_resources_lister_server`].
pub mod v1 {
    tonic::include_proto!("v1");
}

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    /// A `List` answer for one pod, laid out by hand per the protobuf encoding rules as the
    /// kubelet (Go protobuf) writes it: fields in number order, proto3 defaults left out,
    /// repeated integers packed. Each length-delimited field is `key, length, payload`, where
    /// key = field number << 3 | wire type (0 varint, 2 length-delimited).
    ///
    /// `newer_kubelet` adds PodResources field 4 (pod-level `cpu_ids`), which upstream added
    /// after v0.36, so this proto does not know it: a newer kubelet sends it, decoding skips it.
    fn list_response_bytes(newer_kubelet: bool) -> Vec<u8> {
        let (pod_length, pod_level_cpu_ids): (&[u8], &[u8]) = if newer_kubelet {
            // 163 bytes; field 4, packed [2, 3]
            (&[0xa3, 0x01], &[0x22, 0x02, 0x02, 0x03])
        } else {
            (&[0x9f, 0x01], &[]) // 159 bytes
        };
        [
            &[0x0a][..], // ListPodResourcesResponse.pod_resources (1), then its length
            pod_length,
            &[0x0a, 0x07], //   PodResources.name (1)
            b"train-0",
            &[0x12, 0x02], //   PodResources.namespace (2)
            b"ml",
            &[0x1a, 0x8f, 0x01], //   PodResources.containers (3), 143 bytes
            &[0x0a, 0x07],       //     ContainerResources.name (1)
            b"trainer",
            &[0x12, 0x24], //     ContainerResources.devices (2), 36 bytes
            &[0x0a, 0x0e], //       ContainerDevices.resource_name (1)
            b"nvidia.com/gpu",
            &[0x12, 0x05], //       ContainerDevices.device_ids (2)
            b"GPU-a",
            &[0x12, 0x05], //       ContainerDevices.device_ids (2)
            b"MIG-b",
            &[0x1a, 0x04],             //       ContainerDevices.topology (3)
            &[0x0a, 0x02],             //         TopologyInfo.nodes (1)
            &[0x08, 0x01],             //           NUMANode.ID (1) = 1, varint
            &[0x1a, 0x02, 0x02, 0x03], //     ContainerResources.cpu_ids (3), packed [2, 3]
            &[0x22, 0x14],             //     ContainerResources.memory (4), 20 bytes
            &[0x0a, 0x06],             //       ContainerMemory.memory_type (1)
            b"memory",
            &[0x10, 0x80, 0x80, 0x80, 0x80, 0x04], //       ContainerMemory.size (2) = 2^30
            &[0x1a, 0x04, 0x0a, 0x02, 0x08, 0x01], //       ContainerMemory.topology (3): NUMA 1
            &[0x2a, 0x44], //     ContainerResources.dynamic_resources (5), 68 bytes
            &[0x12, 0x05], //       DynamicResource.claim_name (2)
            b"claim",
            &[0x1a, 0x02], //       DynamicResource.claim_namespace (3)
            b"ml",
            &[0x22, 0x37], //       DynamicResource.claim_resources (4), 55 bytes
            &[0x0a, 0x12], //         ClaimResource.cdi_devices (1), 18 bytes
            &[0x0a, 0x10], //           CDIDevice.name (1)
            b"vendor.com/gpu=0",
            &[0x12, 0x0f], //         ClaimResource.driver_name (2)
            b"gpu.example.com",
            &[0x1a, 0x06], //         ClaimResource.pool_name (3)
            b"node-1",
            &[0x22, 0x05], //         ClaimResource.device_name (4)
            b"gpu-0",
            &[0x2a, 0x01], //         ClaimResource.share_id (5)
            b"s",
            pod_level_cpu_ids,
        ]
        .concat()
    }

    #[test]
    fn decodes_a_list_response_in_the_wire_format() {
        let bytes = list_response_bytes(false);
        assert_eq!(bytes.len(), 3 + 159);
        let got = ListPodResourcesResponse::decode(bytes.as_slice()).unwrap();
        let numa_1 = Some(TopologyInfo {
            nodes: vec![NumaNode { id: 1 }],
        });
        let want = ListPodResourcesResponse {
            pod_resources: vec![PodResources {
                name: "train-0".into(),
                namespace: "ml".into(),
                containers: vec![ContainerResources {
                    name: "trainer".into(),
                    devices: vec![ContainerDevices {
                        resource_name: "nvidia.com/gpu".into(),
                        device_ids: vec!["GPU-a".into(), "MIG-b".into()],
                        topology: numa_1.clone(),
                    }],
                    cpu_ids: vec![2, 3],
                    memory: vec![ContainerMemory {
                        memory_type: "memory".into(),
                        size: 1 << 30,
                        topology: numa_1,
                    }],
                    dynamic_resources: vec![DynamicResource {
                        claim_name: "claim".into(),
                        claim_namespace: "ml".into(),
                        claim_resources: vec![ClaimResource {
                            cdi_devices: vec![CdiDevice {
                                name: "vendor.com/gpu=0".into(),
                            }],
                            driver_name: "gpu.example.com".into(),
                            pool_name: "node-1".into(),
                            device_name: "gpu-0".into(),
                            share_id: Some("s".into()),
                        }],
                    }],
                }],
            }],
        };
        assert_eq!(got, want);
        // Encoding, as the fake kubelet does, gives the same bytes back.
        assert_eq!(want.encode_to_vec(), bytes);

        let newer = list_response_bytes(true);
        assert_eq!(newer.len(), 3 + 163);
        assert_eq!(
            ListPodResourcesResponse::decode(newer.as_slice()).unwrap(),
            want
        );
    }

    /// `Get` and `GetPodResourcesResponse` carry one pod by name; field numbers as upstream.
    #[test]
    fn get_request_and_response_in_the_wire_format() {
        let request = GetPodResourcesRequest {
            pod_name: "p".into(),
            pod_namespace: "ns".into(),
        };
        assert_eq!(
            request.encode_to_vec(),
            [&[0x0a, 0x01][..], b"p", &[0x12, 0x02], b"ns"].concat()
        );
        let response = GetPodResourcesResponse::decode(
            // pod_resources (1), 3 bytes: PodResources.name (1) = "p"
            &[0x0a, 0x03, 0x0a, 0x01, b'p'][..],
        )
        .unwrap();
        assert_eq!(response.pod_resources.unwrap().name, "p");
    }
}
