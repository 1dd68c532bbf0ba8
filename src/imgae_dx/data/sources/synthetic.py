"""``data.source: synthetic``: a phantom chest X-ray dataset written as an NIH-format mirror.

No machine here can reach Kaggle, so the pipeline's default benchmark is made on the spot:
``Data_Entry_2017.csv``, ``BBox_List_2017.csv``, ``train_val_list.txt``, ``test_list.txt`` and
``images_00N/images/<patient>_<follow-up>.png`` exactly as in the Kaggle mirror
(``docs/architecture.md``, "Data sources"), so every later stage reads it with the code that
reads the real dataset.

- People (``_phantom_people``): patients spread over the real ID range (all twelve shards),
  several follow-ups each, ages, sexes, PA and AP views; NIH-shaped label mix with findings that
  persist or resolve across follow-ups; a patient-wise official split whose test patients are
  slightly sicker and more often imaged AP, as in NIH.
- Images (``_phantom``, ``_phantom_findings``): attenuation-based phantom radiographs with the
  thoracic anatomy, AP/PA differences, per-image nuisance, and the fourteen findings with a
  ground-truth box each (every abnormal image has at least one box).

Deterministic: the same arguments give byte-identical files whatever ``workers`` is (every
image has its own seed; PNGs are written by Pillow with a fixed compression level and no
timestamps). Byte identity holds for one numpy/Pillow/zlib build; another build may differ
in the last bit of a few pixels or in the PNG compression.
"""

from __future__ import annotations

import os
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from imgae_dx.config import SyntheticParams
from imgae_dx.data import nih
from imgae_dx.data.sources._phantom import render
from imgae_dx.data.sources._phantom_people import plan_dataset

PNG_COMPRESS_LEVEL = 1  # fast; the bytes depend only on the pixels and the zlib build
_CHUNK = 16


def _render_chunk(args: tuple[str, int, list[dict]]) -> list[tuple[str, list]]:
    raw_dir, size, specs = args
    out = []
    for spec in specs:
        img, boxes = render(spec, size)
        path = Path(raw_dir) / nih.image_relpath(spec["name"])
        Image.fromarray(img).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        out.append((spec["name"], boxes))
    return out


def generate(raw_dir: str | os.PathLike, params: SyntheticParams) -> dict:
    """Write a synthetic NIH-format mirror into ``raw_dir``; returns summary counts.

    ``raw_dir`` is created if needed (the fetch stage passes a fresh one). ``params`` is the
    ``data.synthetic`` block. Everything (people, anatomy, lesions, pixels) follows from
    ``seed``; ``workers`` never changes a byte. For comparison, NIH has a ``prevalence`` of
    0.46 and 3.6 ``followups``, and its ``test_list.txt`` holds 0.09 of the patients but 0.23 of
    the images: test patients have more follow-ups and findings, here too. ``difficulty``
    shifts the distribution of lesion size and contrast, each finding keeping its own range.
    """
    raw_dir = Path(raw_dir)
    specs = plan_dataset(
        n_patients=params.n_patients,
        seed=params.seed,
        prevalence=params.prevalence,
        difficulty=params.difficulty,
        test_fraction=params.test_fraction,
        followups=params.followups,
    )
    boxes = _render_images(raw_dir, specs, params.image_size, params.workers)
    n_boxes = _write_metadata(raw_dir, specs, boxes)
    labels = Counter(lab for s in specs for lab in s["findings"])
    return {
        "n_patients": params.n_patients,
        "n_images": len(specs),
        "n_no_finding": sum(1 for s in specs if not s["findings"]),
        "n_abnormal": sum(1 for s in specs if s["findings"]),
        "n_boxes": n_boxes,
        "n_test_patients": len({s["patient_id"] for s in specs if s["test"]}),
        "n_test_images": sum(1 for s in specs if s["test"]),
        "by_view": {v: sum(1 for s in specs if s["view"] == v) for v in nih.VIEWS},
        "by_finding": {lab: int(labels[lab]) for lab in nih.LABELS},
        "image_size": params.image_size,
    }


def _render_images(
    raw_dir: Path, specs: list[dict], size: int, workers: int | None
) -> dict[str, list]:
    """Every image as a PNG in its shard, ``workers`` processes at a time (None: all usable
    cores); returns each image's boxes ``[(finding, (x, y, w, h)), ...]``."""
    for shard in nih.SHARDS:
        (raw_dir / shard / "images").mkdir(parents=True, exist_ok=True)
    chunks = [(str(raw_dir), size, specs[i : i + _CHUNK]) for i in range(0, len(specs), _CHUNK)]
    n_workers = workers or len(os.sched_getaffinity(0))
    n_workers = max(1, min(n_workers, len(chunks)))
    boxes: dict[str, list] = {}
    with tqdm(total=len(specs), desc="synthetic", unit="img", disable=None, leave=False) as bar:
        if n_workers == 1:
            for res in map(_render_chunk, chunks):
                boxes.update(res)
                bar.update(len(res))
        else:
            with get_context("spawn" if os.name == "nt" else "fork").Pool(n_workers) as pool:
                for res in pool.imap(_render_chunk, chunks):
                    boxes.update(res)
                    bar.update(len(res))
    return boxes


def _write_metadata(raw_dir: Path, specs: list[dict], boxes: dict[str, list]) -> int:
    """``Data_Entry_2017.csv``, ``BBox_List_2017.csv`` and the two image lists; returns the
    number of boxes."""
    entries = pd.DataFrame(
        {
            "image": [s["name"] for s in specs],
            "findings": ["|".join(s["findings"]) or nih.NO_FINDING for s in specs],
            "follow_up": [s["follow_up"] for s in specs],
            "patient_id": [s["patient_id"] for s in specs],
            "age": [s["age"] for s in specs],
            "sex": [s["sex"] for s in specs],
            "view": [s["view"] for s in specs],
            "width": [s["width"] for s in specs],
            "height": [s["height"] for s in specs],
            "spacing_x": [s["spacing"] for s in specs],
            "spacing_y": [s["spacing"] for s in specs],
        }
    )
    nih.write_data_entry(entries, raw_dir / nih.DATA_ENTRY)
    rows = []
    for s in specs:
        if not s["findings"]:
            continue
        for label, (x, y, w, h) in boxes[s["name"]]:
            rows.append((s["name"], label, round(x, 2), round(y, 2), round(w, 2), round(h, 2)))
    bbox = pd.DataFrame.from_records(rows, columns=["image", "finding", "x", "y", "w", "h"])
    nih.write_bbox(bbox, raw_dir / nih.BBOX_LIST)
    nih.write_image_list([s["name"] for s in specs if s["test"]], raw_dir / nih.TEST_LIST)
    nih.write_image_list([s["name"] for s in specs if not s["test"]], raw_dir / nih.TRAIN_VAL_LIST)
    return len(bbox)
