/** A Kubernetes object an Event is about (kind, namespace, name). */
export interface ObjectRef {
  kind: string;
  namespace: string;
  name: string;
  uid?: string;
  apiVersion?: string;
}

/**
 * Kubernetes Events on the PVC or VolumeSnapshot a long or failed operation is about (background
 * copy started/finished, placement failed and why), so `kubectl describe pvc` tells the user.
 */
export interface EventRecorder {
  record(event: { involved: ObjectRef; type: "Normal" | "Warning"; reason: string; message: string }): void;
}

/** The object a CreateVolume is for, from the external-provisioner's --extra-create-metadata parameters. */
export function pvcOf(parameters: Record<string, string>): ObjectRef | undefined {
  const name = parameters["csi.storage.k8s.io/pvc/name"];
  const namespace = parameters["csi.storage.k8s.io/pvc/namespace"];
  return name && namespace ? { kind: "PersistentVolumeClaim", apiVersion: "v1", namespace, name } : undefined;
}

/** The VolumeSnapshot a CreateSnapshot is for (external-snapshotter --extra-create-metadata). */
export function volumeSnapshotOf(parameters: Record<string, string>): ObjectRef | undefined {
  const name = parameters["csi.storage.k8s.io/volumesnapshot/name"];
  const namespace = parameters["csi.storage.k8s.io/volumesnapshot/namespace"];
  return name && namespace
    ? { kind: "VolumeSnapshot", apiVersion: "snapshot.storage.k8s.io/v1", namespace, name }
    : undefined;
}
