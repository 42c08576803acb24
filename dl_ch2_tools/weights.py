"""Trained weights on disk: a safetensors file and a JSON sidecar that vouches for it.

``save_weights(model, path, metadata)`` writes ``model.state_dict()`` to ``path`` (the
safetensors format: tensors and their shapes only, no code, nothing to unpickle) and
``<path>.json`` beside it, holding the weights file's sha256 and size, each tensor's shape
and dtype, and what the caller adds (``dl-ch2 train`` adds the run's configuration, the
md5s of the MNIST files it trained on and the test accuracy it measured).

``load_weights(path)`` reads the sidecar, checks the weights file's size and sha256 before
anything in it is parsed, then loads the tensors and checks their names, shapes and
dtypes against the sidecar: a truncated, corrupted or swapped file is a ``WeightsError``
that says which file and what differs. Both files are written with the project's atomic
writer, the weights first, so a sidecar never names a weights file that is not complete.

A checksum detects corruption, not tampering: anyone who edits the weights can recompute
it. So the sidecar is also **signed**: an HMAC-SHA256 of its every field (the weights'
sha256, the run's configuration, its test accuracy) with a key the user keeps, made once
(32 random bytes, mode 600, in a folder of mode 700) at ``$DL_CH2_WEIGHTS_KEY`` or
``~/.config/dl-ch2/weights.key``. A sidecar signed with that key and then edited is refused;
one signed with another key (another machine's) or not signed loads, and ``record_trust``
says plainly that its record proves nothing (``dl-ch2 evaluate`` then does not compare
with it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _load_safetensors
from safetensors.torch import save as _save_safetensors
from torch import nn

from conformance.atomic import atomic_write

__all__ = [
    "KEY_ENV",
    "WEIGHTS_FORMAT",
    "WeightsError",
    "load_weights",
    "read_sidecar",
    "record_trust",
    "save_weights",
    "sidecar_path",
]

#: The ``format`` field of every sidecar this module writes.
WEIGHTS_FORMAT = "dl-ch2-weights/1"


class WeightsError(ValueError):
    """A weights file or its sidecar is missing, truncated, tampered with or not ours."""


#: Where the signing key lives (default ``~/.config/dl-ch2/weights.key``).
KEY_ENV = "DL_CH2_WEIGHTS_KEY"
_SIGNATURE = "signature"


def key_path() -> Path:
    given = os.environ.get(KEY_ENV)
    if given:
        return Path(given)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "dl-ch2" / "weights.key"


def _key(create: bool) -> bytes | None:
    """The user's signing key; made once (mode 600) when ``create``; None if absent."""
    path = key_path()
    if create and not path.exists():
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made meanwhile by another process: use it
            pass
        except OSError:  # no writable home: the sidecar goes unsigned, and says so
            return None
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    try:
        if path.stat().st_mode & 0o077:
            raise WeightsError(f"{path}: the weights key is readable by others; chmod 600 it")
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise WeightsError(f"{path}: not a dl-ch2 weights key ({exc})") from exc


def _mac(key: bytes, sidecar: Mapping[str, Any]) -> str:
    fields = {k: v for k, v in sidecar.items() if k != _SIGNATURE}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"dl-ch2 weights key id\0" + key).hexdigest()[:16]


def _check_signature(side: Path, sidecar: Mapping[str, Any]) -> None:
    """Refuse a sidecar signed with this user's key whose fields were changed since."""
    sig = sidecar.get(_SIGNATURE)
    key = _key(create=False)
    if not isinstance(sig, dict) or key is None or sig.get("key_id") != _key_id(key):
        return
    if not hmac.compare_digest(str(sig.get("hmac_sha256")), _mac(key, sidecar)):
        raise WeightsError(
            f"{side}: its signature does not match its fields: the sidecar was edited after "
            "it was signed with your key; refusing to load it"
        )


def _signed_by(key: bytes | None, sig: object, sidecar: Mapping[str, Any]) -> bool:
    if not isinstance(sig, dict) or key is None or sig.get("key_id") != _key_id(key):
        return False
    return hmac.compare_digest(str(sig.get("hmac_sha256")), _mac(key, sidecar))


def record_trust(sidecar: Mapping[str, Any]) -> tuple[bool, str]:
    """(whether the sidecar's record is the user's own, signed and intact; in words)."""
    sig = sidecar.get(_SIGNATURE)
    key = _key(create=False)
    if _signed_by(key, sig, sidecar):
        return True, f"sidecar signed with your key ({key_path()}, HMAC-SHA256)"
    why = "signed with another key" if isinstance(sig, dict) else "not signed"
    return False, (
        f"sidecar {why}: its sha256 detects corruption, not tampering, and its record "
        "proves nothing"
    )


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar of a weights file: ``naive.safetensors`` -> ``naive.safetensors.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_weights(
    model: nn.Module, path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write ``model.state_dict()`` as safetensors to ``path`` and its sidecar; return the latter.

    ``metadata`` (JSON-serialisable) is stored in the sidecar next to the integrity fields.
    """
    weights = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if not tensors:
        raise ValueError(f"model {type(model).__name__} has no weights to save")
    blob: bytes = _save_safetensors(tensors)
    reserved = {"format", "weights_file", "sha256", "bytes", "tensors", _SIGNATURE}
    clash = reserved & set(metadata or {})
    if clash:
        raise ValueError(f"metadata must not set {sorted(clash)}: the sidecar computes them")
    sidecar: dict[str, Any] = {
        "format": WEIGHTS_FORMAT,
        "weights_file": weights.name,
        "sha256": _sha256(blob),
        "bytes": len(blob),
        "tensors": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
            for k, v in tensors.items()
        },
        **dict(metadata or {}),
    }
    key = _key(create=True)
    if key is not None:
        sidecar[_SIGNATURE] = {"key_id": _key_id(key), "hmac_sha256": _mac(key, sidecar)}
    atomic_write(weights, blob)
    return atomic_write(sidecar_path(weights), json.dumps(sidecar, indent=2) + "\n")


def read_sidecar(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """``(weights file, sidecar)`` for a weights file or its ``.json`` sidecar."""
    p = Path(path)
    side = p if p.name.endswith(".json") else sidecar_path(p)
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise WeightsError(
            f"{side}: no sidecar for {p.name}; weights are loaded only with the sidecar that "
            "records their sha256 (written by `dl-ch2 train` or save_weights)"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{side}: unreadable sidecar ({exc})") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"{side}: not a {WEIGHTS_FORMAT} sidecar")
    for key, kind in (("weights_file", str), ("sha256", str), ("bytes", int), ("tensors", dict)):
        if not isinstance(sidecar.get(key), kind):
            raise WeightsError(f"{side}: field {key!r} is missing or not a {kind.__name__}")
    name = sidecar["weights_file"]
    if Path(name).name != name:
        raise WeightsError(f"{side}: weights_file {name!r} must be a file name beside it")
    _check_signature(side, sidecar)
    return side.with_name(name), sidecar


def load_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The verified tensors (on the CPU) and the sidecar of a weights file.

    Nothing is parsed before the file's size and sha256 match the sidecar's.
    """
    weights, sidecar = read_sidecar(path)
    try:
        blob = weights.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{weights}: cannot read ({exc.strerror or exc})") from exc
    if len(blob) != sidecar["bytes"]:
        raise WeightsError(
            f"{weights}: {len(blob)} bytes, but its sidecar records {sidecar['bytes']} "
            "(truncated or replaced); refusing to load it"
        )
    digest = _sha256(blob)
    if digest != sidecar["sha256"]:
        raise WeightsError(
            f"{weights}: sha256 {digest} is not the {sidecar['sha256']} its sidecar records "
            "(corrupted or tampered with); refusing to load it"
        )
    tensors: dict[str, torch.Tensor] = _load_safetensors(blob)
    expected = {
        k: (list(v.get("shape", [])), v.get("dtype")) for k, v in sidecar["tensors"].items()
    }
    got = {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()}
    if got != expected:
        raise WeightsError(f"{weights}: tensors {got} do not match the sidecar's {expected}")
    return tensors, sidecar
