"""Running on a cluster: the image's locked dependencies, KubeRay manifests rendered from a job
spec (`k8s`), and job submission to any Ray cluster through the Ray Jobs API (`submit`)."""
