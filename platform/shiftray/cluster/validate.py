"""Offline validation of Kubernetes manifests: KubeRay kinds against the KubeRay CRDs' schemas,
core kinds (ConfigMap, PersistentVolumeClaim, ...) against Kubernetes' own (the
``kubernetes-validate`` package). Strict: an unknown (misspelt) field is an error.

    shiftray k8s validate FILE.yaml ... [--crds DIR]      # or SHIFTRAY_KUBERAY_CRDS=DIR

A CRD's schema is OpenAPI v3; to catch unknown fields, every object that lists ``properties``
and neither sets ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` gets
``additionalProperties: false``, and ``x-kubernetes-int-or-string`` becomes "integer or string".
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from shiftray.errors import UserInputError

CRDS_ENV = "SHIFTRAY_KUBERAY_CRDS"


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused at every level (see the module docstring)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):  # fmt: skip
        out["additionalProperties"] = False
    return out


def crds_dir(given: str | Path | None = None) -> Path:
    path = given or os.environ.get(CRDS_ENV)
    if not path:
        raise UserInputError(f"no KubeRay CRDs: give --crds DIR or set {CRDS_ENV} (the folder of "
                             "ray.io_rayclusters.yaml, ray.io_rayjobs.yaml, ray.io_rayservices.yaml; "
                             "ray-project/kuberay, ray-operator/config/crd/bases/)")  # fmt: skip
    path = Path(path)
    if not any(path.glob("ray.io_*.yaml")):
        raise UserInputError(f"no ray.io_*.yaml CRDs in {path}")
    return path


@functools.lru_cache(maxsize=4)
def crd_schemas(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD."""
    out = {}
    for f in sorted(path.glob("*.yaml")):
        crd = yaml.load(f.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 3 MB
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
    return out


def where(err: Any) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


def validate_doc(doc: dict[str, Any], crds: Path) -> list[str]:
    """Every problem with one manifest, each as ``path: message``."""
    import jsonschema

    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    schema = crd_schemas(crds).get(key)
    if schema is not None:
        v = jsonschema.Draft7Validator(schema)
        return [f"{where(e)}: {e.message}" for e in sorted(v.iter_errors(doc), key=str)]
    if key[0].endswith(".io/v1") and key[0].startswith("ray.io"):
        return [f"no CRD schema for {key[1]} ({key[0]}) in {crds}"]
    return core_errors(doc)


def core_errors(doc: dict[str, Any]) -> list[str]:
    try:
        import kubernetes_validate as kv
    except ImportError:
        raise UserInputError("validating core kinds needs kubernetes-validate: "
                             "pip install 'shiftray[k8s]'") from None  # fmt: skip
    try:
        kv.validate(doc, kv.latest_version(), strict=True)
    except kv.ValidationError as e:
        return [f"{where(e)}: {e.message}"]
    except kv.SchemaNotFoundError:
        return [f"no Kubernetes schema for {doc.get('kind')} ({doc.get('apiVersion')})"]
    return []


def validate_docs(docs: list[dict[str, Any]], crds: str | Path | None = None) -> list[str]:
    """``KIND/name: path: message`` for every problem in every manifest (empty: all valid)."""
    path = crds_dir(crds)
    errors = []
    for d in docs:
        name = f"{d.get('kind', '?')}/{(d.get('metadata') or {}).get('name', '?')}"
        errors += [f"{name}: {e}" for e in validate_doc(d, path)]
    return errors


def validate_files(files: list[str], crds: str | Path | None = None) -> list[str]:
    docs = []
    for f in files:
        docs += [d for d in yaml.safe_load_all(Path(f).read_text()) if d]
    return validate_docs(docs, crds)
