"""Model cards: what the card says comes from the detector, metrics.json and report.md."""

from __future__ import annotations

from imgae_dx.model_card import model_card, report_caveats
from tests.conftest import make_params

REPORT_MD = """# Report

## 8. Training

text

## 9. Caveats

- **Labels are noisy.** text-mined.
- **View confounder.** AP films differ.

## 10. After
- not a caveat
"""

META = {
    "arch": "ae",
    "model_args": {"channels": [4, 8], "latent_dim": 4},
    "preprocessing": {"image_size": 32},
    "score_method": {"map": "sq", "reduce": "mean"},
    "threshold": {"value": 0.0123456, "percentile": 95.0, "n_val_normal": 40},
    "training": {
        "source": "kaggle", "shards": ["images_001", "images_002"], "views": ["AP", "PA"],
        "n_images": 1234, "n_patients": 321, "film_sides": [1024, 1024],
        "params": {"seed": 3, "train": {"epochs": 7}}, "best_epoch": 5,
    },
}  # fmt: skip
RESULT = {
    "auroc": 0.7123, "auroc_ci95": [0.65, 0.77], "auprc": 0.6812, "auprc_ci95": [0.61, 0.74],
    "n_normal": 60, "n_abnormal": 50,
    "threshold": {"sensitivity": 0.21, "specificity": 0.953, "tp": 11, "fp": 3, "tn": 57, "fn": 39},
    "by_view": {"PA": {"auroc": 0.74, "auroc_ci95": [0.6, 0.8], "sensitivity": 0.2,
                       "specificity": 0.96, "n_normal": 30, "n_abnormal": 20}},
}  # fmt: skip


def test_report_caveats_are_the_bullets_of_the_caveats_section():
    assert report_caveats(REPORT_MD) == [
        "**Labels are noisy.** text-mined.",
        "**View confounder.** AP films differ.",
    ]
    assert report_caveats("# no caveats here\n") == []


def test_model_card_states_data_metrics_threshold_views_use_and_limitations():
    card = model_card(META, RESULT, report_caveats(REPORT_MD), make_params().report, "d/ae.pt")
    for text in (
        "| source | kaggle |", "images_001, images_002", "| training images | 1234 |",
        "| training patients | 321 |", "| AUROC | 0.712 [0.650, 0.770] |",
        "| AUPRC | 0.681 [0.610, 0.740] |", "0.0123456", "95th percentile of 40 validation",
        "sensitivity 0.210 and specificity 0.953", "| PA | 0.740 [0.600, 0.800] |",
        "not a medical device", "- **View confounder.** AP films differ.", "| train.epochs | `7` |",
    ):  # fmt: skip
        assert text in card, text
    assert "not a caveat" not in card


def test_model_card_without_metrics_says_so():
    card = model_card(META, None, [], make_params().report, "d/ae.pt")
    assert "| AUROC | n/a |" in card and "No per-view figures." in card
    assert "seed ensemble" in card  # no threshold figures for this seed: says where they are


def test_seed_result_picks_the_seed_of_the_card():
    from imgae_dx.pipeline.cards import seed_result

    one = {"models": {"ae": RESULT}}
    assert seed_result(one, "ae", 0) is RESULT
    several = {
        "models": {"ae": {"auroc": 0.9}},
        "seeds": {"models": {"ae": {"per_seed": {"0": {"auroc": 0.5}, "1": {"auroc": 0.6}}}}},
    }
    assert seed_result(several, "ae", 1) == {"auroc": 0.6}


def test_seeds_section_lists_every_seed_and_the_ensemble():
    from imgae_dx.model_card import seeds_section

    rp = make_params().report
    other = {**META, "threshold": {**META["threshold"], "value": 0.02}}
    seed1 = {"auroc": 0.61, "auroc_ci95": [0.5, 0.7], "auprc": 0.6, "auprc_ci95": [0.5, 0.7],
             "threshold": {"sensitivity": 0.3, "specificity": 0.9}}  # fmt: skip
    ensemble = {**RESULT, "threshold": {**RESULT["threshold"], "value": 0.015},
                "spread": {"n_seeds": 2, "auroc_mean": 0.66, "auroc_sd": 0.07,
                           "auprc_mean": 0.64, "auprc_sd": 0.05}}  # fmt: skip
    rows = [(3, "d/ae/seed3.pt", META, RESULT), (4, "d/ae/seed4.pt", other, seed1)]
    text = seeds_section("ae", rows, ensemble, rp)
    assert "| 3 | `d/ae/seed3.pt` | 0.0123456 | 0.712 [0.650, 0.770] | 0.681 [0.610, 0.740] | " \
        "0.210 | 0.953 | `models:/imgae-dx-ae@seed3` |" in text  # fmt: skip
    assert "| 4 | `d/ae/seed4.pt` | 0.02 | 0.610 [0.500, 0.700] |" in text
    assert "| ensemble | (not a detector) | 0.015 | 0.712 [0.650, 0.770] |" in text
    assert "`models:/imgae-dx-ae/latest` is seed 3's" in text
    assert "AUROC 0.660 ± 0.070" in text
    card = model_card(META, RESULT, [], rp, "d/ae/seed3.pt", text)
    assert card.index("## Every training seed's detector") < card.index("## Known limitations")
