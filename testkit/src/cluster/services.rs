//! Services as loopback load balancers: each Service gets an address of its own (127.2.x.y, its
//! cluster IP here) and listens on each of its ports there; every connection goes to the next
//! ready pod its selector matches (round robin), on the target port (by number or by the
//! container port's name). A pod that turns unready or goes away gets no new connections.
//! Services without a selector and `type: ExternalName` are not served.
//!
//! Each served Service also gets one `discovery.k8s.io/v1` EndpointSlice, `<service>-slice`
//! (label `kubernetes.io/service-name`, owned by the Service so the garbage collector removes
//! it with the Service): every selected pod with `conditions.ready`, the Service's ports
//! resolved to the pods' port numbers. It is written only when its content changes. What reads
//! endpoints here (the balancers, the Ingress front) reads the pod table, not the slices.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::kubelet::{IpPool, PodInfo, PodTable};

/// (namespace, name) -> the Service's loopback address and its ports (port -> target).
pub type ServiceTable = Arc<Mutex<BTreeMap<(String, String), ServiceEntry>>>;

#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub ip: Ipv4Addr,
    /// Service port -> (port name, target port as written: a number or a name).
    pub ports: BTreeMap<u16, (String, Value)>,
    pub selector: BTreeMap<String, String>,
    uid: String,
}

/// The ready pods behind `entry` with the pod port of service `port`.
pub fn endpoints(
    entry: &ServiceEntry,
    port: u16,
    pods: &[PodInfo],
    namespace: &str,
) -> Vec<SocketAddr> {
    let Some((_, target)) = entry.ports.get(&port) else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| p.namespace == namespace && p.ready && selects(&entry.selector, &p.labels))
        .filter_map(|p| {
            let pod_port = match target {
                Value::String(name) => *p.ports.get(name)?,
                other => u16::try_from(other.as_u64()?).ok()?,
            };
            Some(SocketAddr::from((p.ip, pod_port)))
        })
        .collect()
}

/// The EndpointSlice of Service `namespace/name` (its content: what is compared and written):
/// the pods `entry` selects, ready or not, by name; the Service's ports with their pod port
/// numbers (a named target port as the first selected pod that has it declares it).
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    entry: &ServiceEntry,
    pods: &[PodInfo],
) -> Value {
    let mut selected: Vec<&PodInfo> = pods
        .iter()
        .filter(|p| p.namespace == namespace && selects(&entry.selector, &p.labels))
        .collect();
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    let endpoints: Vec<Value> = selected
        .iter()
        .map(|p| {
            json!({
                "addresses": [p.ip.to_string()],
                "conditions": {"ready": p.ready, "serving": p.ready, "terminating": false},
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": p.name},
            })
        })
        .collect();
    let ports: Vec<Value> = entry
        .ports
        .values()
        .filter_map(|(port_name, target)| {
            let number = match target {
                Value::String(target) => {
                    selected.iter().find_map(|p| p.ports.get(target).copied())?
                }
                other => u16::try_from(other.as_u64()?).ok()?,
            };
            Some(json!({"name": port_name, "port": number, "protocol": "TCP"}))
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-slice"),
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Service", "name": name, "uid": entry.uid,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

/// The parts of a slice [`endpoint_slice`] decides (what a write would change).
fn slice_content(slice: &Value) -> Value {
    json!({
        "labels": slice["metadata"]["labels"],
        "ownerReferences": slice["metadata"]["ownerReferences"],
        "addressType": slice["addressType"],
        "endpoints": slice["endpoints"],
        "ports": slice["ports"],
    })
}

/// Whether an equality selector (`matchLabels`, a Service's `selector`) selects these labels;
/// an empty selector selects nothing here.
pub(super) fn selects(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Keeps one listener per Service port in step with the API.
pub struct LoadBalancers {
    client: Client,
    pods: PodTable,
    table: ServiceTable,
    listeners: BTreeMap<(String, String), Vec<JoinHandle<()>>>,
    ips: IpPool,
}

impl LoadBalancers {
    pub fn new(client: Client, pods: PodTable, table: ServiceTable) -> LoadBalancers {
        LoadBalancers {
            client,
            pods,
            table,
            listeners: BTreeMap::new(),
            // Service addresses: 127.2.x.y (pods have 127.1.x.y).
            ips: IpPool::from(Ipv4Addr::new(127, 2, 0, 1)),
        }
    }

    pub async fn run(mut self) {
        let period = Duration::from_millis(200);
        super::every("services", period, async || self.pass().await).await
    }

    async fn pass(&mut self) -> Result<(), kube::Error> {
        let services = Api::<Service>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let mut seen = Vec::new();
        for service in services {
            let key = (service.namespace().unwrap_or_default(), service.name_any());
            let uid = service.uid().unwrap_or_default();
            let spec = serde_json::to_value(&service.spec).unwrap_or_default();
            let selector: BTreeMap<String, String> =
                serde_json::from_value(spec["selector"].clone()).unwrap_or_default();
            if selector.is_empty() {
                continue;
            }
            let ports: BTreeMap<u16, (String, Value)> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    let port = u16::try_from(p["port"].as_u64()?).ok()?;
                    let target = if p["targetPort"].is_null() {
                        p["port"].clone()
                    } else {
                        p["targetPort"].clone()
                    };
                    Some((
                        port,
                        (p["name"].as_str().unwrap_or_default().to_owned(), target),
                    ))
                })
                .collect();
            seen.push(key.clone());
            let current = self.table.lock().unwrap().get(&key).cloned();
            let unchanged = current
                .as_ref()
                .is_some_and(|c| c.uid == uid && c.ports == ports && c.selector == selector);
            if unchanged {
                continue;
            }
            self.stop(&key);
            let ip = match current {
                Some(c) if c.uid == uid => c.ip,
                _ => self.ips.next(),
            };
            let entry = ServiceEntry {
                ip,
                ports: ports.clone(),
                selector,
                uid,
            };
            self.table.lock().unwrap().insert(key.clone(), entry);
            let mut handles = Vec::new();
            for port in ports.keys() {
                let listener = TcpListener::bind((ip, *port)).await.map_err(|e| {
                    kube::Error::Service(
                        format!("Service {}/{} port {port}: {e}", key.0, key.1).into(),
                    )
                })?;
                handles.push(tokio::spawn(balance(
                    listener,
                    key.clone(),
                    *port,
                    self.table.clone(),
                    self.pods.clone(),
                )));
            }
            self.listeners.insert(key, handles);
        }
        let gone: Vec<_> = self
            .listeners
            .keys()
            .filter(|k| !seen.contains(k))
            .cloned()
            .collect();
        for key in gone {
            self.stop(&key);
            self.table.lock().unwrap().remove(&key);
        }
        self.write_slices().await
    }

    /// Writes each served Service's EndpointSlice whose content differs from the stored one.
    async fn write_slices(&self) -> Result<(), kube::Error> {
        let stored: BTreeMap<(String, String), Value> =
            Api::<EndpointSlice>::all(self.client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(|s| {
                    let key = (s.namespace().unwrap_or_default(), s.name_any());
                    (key, serde_json::to_value(s).unwrap_or_default())
                })
                .collect();
        let wanted: Vec<Value> = {
            let table = self.table.lock().unwrap();
            let pods = self.pods.lock().unwrap();
            table
                .iter()
                .map(|((ns, name), entry)| endpoint_slice(ns, name, entry, &pods))
                .collect()
        };
        for slice in wanted {
            let ns = slice["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = slice["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let api = Api::<EndpointSlice>::namespaced(self.client.clone(), &ns);
            match stored.get(&(ns.clone(), name.clone())) {
                Some(old) if slice_content(old) == slice_content(&slice) => {}
                Some(_) => {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&slice))
                        .await?;
                }
                None => {
                    let slice: EndpointSlice =
                        serde_json::from_value(slice).expect("an EndpointSlice");
                    match api.create(&PostParams::default(), &slice).await {
                        Ok(_) => {}
                        // Written meanwhile: the next pass compares again.
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    fn stop(&mut self, key: &(String, String)) {
        for handle in self.listeners.remove(key).into_iter().flatten() {
            handle.abort();
        }
    }
}

async fn balance(
    listener: TcpListener,
    key: (String, String),
    port: u16,
    table: ServiceTable,
    pods: PodTable,
) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let backends = {
            let table = table.lock().unwrap();
            let Some(entry) = table.get(&key) else { return };
            endpoints(entry, port, &pods.lock().unwrap(), &key.0)
        };
        if backends.is_empty() {
            // No ready endpoint: the connection is refused, as kube-proxy rejects it.
            continue;
        }
        let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(backend).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: [u8; 4], ready: bool, app: &str) -> PodInfo {
        PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            labels: BTreeMap::from([("app".into(), app.into())]),
            ip: Ipv4Addr::from(ip),
            ready,
            ports: BTreeMap::from([("http".into(), 8080)]),
            pids: Vec::new(),
            cpu_requests: BTreeMap::new(),
        }
    }

    #[test]
    fn endpoints_are_the_ready_selected_pods_on_the_target_port() {
        let entry = ServiceEntry {
            ip: Ipv4Addr::new(127, 2, 0, 1),
            ports: BTreeMap::from([
                (80, ("http".into(), json!("http"))),
                (81, ("raw".into(), json!(9000))),
            ]),
            selector: BTreeMap::from([("app".into(), "a".into())]),
            uid: "u".into(),
        };
        let pods = [
            pod("a1", [127, 1, 0, 1], true, "a"),
            pod("a2", [127, 1, 0, 2], false, "a"),
            pod("b1", [127, 1, 0, 3], true, "b"),
        ];
        assert_eq!(
            endpoints(&entry, 80, &pods, "ns"),
            ["127.1.0.1:8080".parse().unwrap()]
        );
        assert_eq!(
            endpoints(&entry, 81, &pods, "ns"),
            ["127.1.0.1:9000".parse().unwrap()]
        );
        assert!(endpoints(&entry, 82, &pods, "ns").is_empty());
        assert!(endpoints(&entry, 80, &pods, "other").is_empty());
    }

    #[test]
    fn the_endpoint_slice_lists_the_selected_pods_with_readiness_and_resolved_ports() {
        let entry = ServiceEntry {
            ip: Ipv4Addr::new(127, 2, 0, 1),
            ports: BTreeMap::from([
                (80, ("http".into(), json!("http"))),
                (81, ("raw".into(), json!(9000))),
                (82, ("nowhere".into(), json!("grpc"))),
            ]),
            selector: BTreeMap::from([("app".into(), "a".into())]),
            uid: "u1".into(),
        };
        let pods = [
            pod("a2", [127, 1, 0, 2], false, "a"),
            pod("a1", [127, 1, 0, 1], true, "a"),
            pod("b1", [127, 1, 0, 3], true, "b"),
        ];
        let slice = endpoint_slice("ns", "svc", &entry, &pods);
        assert_eq!(slice["metadata"]["name"], "svc-slice");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc"
        );
        let owner = &slice["metadata"]["ownerReferences"][0];
        assert_eq!(
            (&owner["kind"], &owner["uid"]),
            (&json!("Service"), &json!("u1"))
        );
        assert_eq!(
            slice["endpoints"],
            json!([
                {"addresses": ["127.1.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false},
                 "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a1"}},
                {"addresses": ["127.1.0.2"], "conditions": {"ready": false, "serving": false, "terminating": false},
                 "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a2"}},
            ])
        );
        // A named port no pod declares is left out.
        assert_eq!(
            slice["ports"],
            json!([
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "raw", "port": 9000, "protocol": "TCP"},
            ])
        );
        // The content compared before a write ignores what the server adds.
        let mut stored = slice.clone();
        stored["metadata"]["resourceVersion"] = json!("7");
        assert_eq!(slice_content(&stored), slice_content(&slice));
        let none = endpoint_slice("other", "svc", &entry, &pods);
        assert_eq!(none["endpoints"], json!([]));
        assert_ne!(slice_content(&none), slice_content(&slice));
    }
}
