"""Section 9 of report.md: the caveats, one function each, in the order they are printed.

Each returns its bullet's text, or None when it does not apply to this run.
"""

from __future__ import annotations

from collections.abc import Callable

from imgae_dx.report.cells import fmt
from imgae_dx.report.names import METADATA_COLUMNS, RESAMPLING
from imgae_dx.report.results import Analysis
from imgae_dx.report.serialize import ci_key


def noisy_labels(an: Analysis) -> str | None:
    if an.data.source == "medianomaly":
        return None
    return (
        "**Labels are noisy.** NIH ChestX-ray14 labels were text-mined from radiology reports "
        '(Wang et al., CVPR 2017); "No Finding" is not a radiologist-verified normal and some '
        "findings are missed or hallucinated by the NLP labeller. AUROCs against such labels are "
        "biased (usually downwards) and the per-finding numbers inherit each label's own error."
    )


def benchmark_split(an: Analysis) -> str | None:
    if an.data.source != "medianomaly":
        return None
    return (
        "**MedIAnomaly's benchmark split.** Train and test images are those of MedIAnomaly's "
        "data.json (Cai et al., arXiv:2404.04518), already preprocessed by its authors; the "
        "labels are image-level (normal or abnormal) from the source challenge's radiologists, "
        "with no finding named. The validation normals were taken from the training list "
        "(`data.val_fraction`), so training saw fewer normals than the published runs, and "
        "the published numbers are the last epoch's, without validation-based selection."
    )


def missing_metadata(an: Analysis) -> str | None:
    """The metadata columns the data lacks, what the report leaves out, and the unit's fallback."""
    ref = next(iter(an.scored.tests.values()), None)
    absent = [c for c in METADATA_COLUMNS if ref is not None and c not in ref]
    if not absent:
        return None
    strata = [c for c in absent if c != "patient_id"]
    text = f"**The data has no {_listed([c.replace('_id', ' ID') for c in absent])}.**"
    if strata:
        text += f" Section 4 has no strata by {_listed(strata)}" + (
            " and section 2 no view baseline." if "view" in absent else "."
        )
    if "patient_id" in absent and an.params.unit == "patient":
        text += (
            " `report.unit: patient` fell back to `image`: without patient IDs every film "
            "counts as independent, so if some patients have several films, the intervals and "
            "p-values are somewhat too narrow."
        )
    return text


def _listed(words: list[str]) -> str:
    """["a", "b", "c"] -> "a, b or c"."""
    return " or ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def under_trained(an: Analysis) -> str | None:
    ref = an.training.reference_val_mse
    weak = [
        f"{arch} ({t.best_val_loss:.4g} vs {ref:.4g})"
        for arch, t in an.training.models.items()
        if (t.best_over_reference or 0.0) >= 1.0
    ]
    if not weak:
        return None
    return (
        "**Under-trained models.** The selected validation loss of "
        + ", ".join(weak)
        + " is not below that of predicting the mean training image (section 8): their "
        "reconstructions carry no more information than the average image, and their AUROC "
        "says little about the architecture."
    )


def synthetic_data(an: Analysis) -> str | None:
    if an.data.source != "synthetic":
        return None
    return (
        "**Synthetic data is not clinical evidence.** This run used the synthetic phantom "
        "mirror: the numbers show that the pipeline works end to end, not how any model "
        "performs on chest X-rays."
    )


def _view_confounded(an: Analysis) -> list[str]:
    """Models whose pooled AUROC exceeds every per-view AUROC."""
    return [
        a
        for a, m in an.models.items()
        if m.auroc is not None
        and m.strata.view
        and all(v.auroc is not None for v in m.strata.view.values())
        and m.auroc > max(v.auroc for v in m.strata.view.values())
    ]


def view_confounder(an: Analysis) -> str | None:
    views = an.composition.by_view
    if not views or not any(v.view == "AP" for v in views):
        return None
    ap_n = an.composition.ap_share(0, an.data.n_test_normal)
    ap_a = an.composition.ap_share(1, an.data.n_test_abnormal)
    text = (
        f"**View confounder.** {100 * ap_a:.0f} % of abnormal vs {100 * ap_n:.0f} % of normal "
        f"test images are AP; view alone reaches AUROC {fmt(an.baselines['view_ap'].auroc)}. "
        "AP films come from sicker, "
        "supine patients and look different (magnified heart, lower contrast, lines and "
        "tubes), so a score that merely differs between views earns pooled AUROC without "
        "seeing any pathology, and a single threshold gives different specificity per view "
        "(section 3). Read the per-view AUROCs (section 4.1) next to the pooled one."
    )
    confounded = _view_confounded(an)
    if confounded:
        text += (
            " For " + ", ".join(confounded) + " the pooled AUROC exceeds every per-view "
            "AUROC: part of its pooled performance comes from the view mix."
        )
    return text


def clustered_images(an: Analysis) -> str | None:
    n_pat, n_img = an.data.n_test_patients, an.composition.n_images
    if not n_pat or n_pat >= n_img:
        return None
    text = (
        f"**Images are clustered in patients.** The {n_img} test images come from "
        f"{n_pat} patients, and films of one patient are correlated. "
    )
    if an.unit == "patient":
        return text + (
            "The bootstrap resamples patients with all their films (cluster bootstrap), and "
            "DeLong's intervals and p-values (sections 2 and 5) use Obuchowski's clustered "
            "variance, so both account for this."
        )
    return text + (
        "`report.unit: image` treats films as independent, so every interval and "
        "p-value here is somewhat too narrow."
    )


def validation_threshold(an: Analysis) -> str:
    rp = an.params
    return (
        "**Only validation normals set the operating point.** The threshold is the "
        f"{rp.threshold_percentile:g}th percentile of validation-normal scores; no test "
        "label chose a threshold, checkpoint or hyperparameter. F1-max, "
        f"sensitivity at {100 * rp.target_specificity:g} % specificity and specificity at "
        f"{100 * rp.target_sensitivity:g} % sensitivity sweep every threshold on the test "
        "labels: they summarise the ranking (like AUROC) and are not achievable operating points."
    )


def intervals_and_multiplicity(an: Analysis) -> str:
    rp = an.params
    return (
        f"**Intervals and multiplicity.** {ci_key(rp).upper()} intervals are percentile intervals "
        f"of a stratified bootstrap (B = {rp.bootstrap}; {RESAMPLING[an.unit]}). Holm's "
        "correction covers the architecture comparisons only; the subgroup "
        "intervals are unadjusted and exploratory, and strata with fewer than "
        f"{rp.min_stratum} normals or abnormals report no AUROC."
    )


def fixed_baselines(an: Analysis) -> str:
    view = an.baselines.get("view_ap")
    with_view = view is not None and view.n_normal + view.n_abnormal > 0  # the data has views
    return (
        "**Baselines are fixed, not fitted.** Mean and standard deviation of intensity count as "
        '"higher = abnormal"'
        + (' and view as "AP = abnormal"' if with_view else "")
        + ", decided before looking at any label; "
        "an AUROC below 0.5 means the opposite direction would separate the classes."
    )


def ra_saliency(an: Analysis) -> str | None:
    used = [
        f"{a}: {m.score_method.get('saliency')}"
        for a, m in an.models.items()
        if m.score_method.get("map") == "ra" and m.score_method.get("saliency") != "lpips"
    ]
    if not used:
        return None
    return (
        "**RA saliency.** Bercea et al. (MIDL 2023) weight the CLAHE residual with LPIPS; "
        f"here the RA maps used a download-free saliency ({', '.join(used)}) because no "
        "ImageNet weights are downloaded, so they differ from the paper's maps."
    )


def ra_map_variant(an: Analysis) -> str | None:
    """Which RA map ran, and where it departs from the authors' evaluation code."""
    ran = {a: m.score_method for a, m in an.models.items() if m.score_method.get("map") == "ra"}
    if not ran:
        return None
    notes = []
    for arch, sm in ran.items():
        # maps scored before score.ra_map existed are the project's variant
        variant, latent = sm.get("ra_map") or "project", sm.get("latent") or "mean"
        what = f"{arch}: `{variant}` map"
        if variant == "project":
            what += " (saliency product smoothed once; the project's CLAHE)"
        what += (
            ", posterior-mean reconstruction (the authors decode one sampled latent)"
            if latent == "mean"
            else f", sampled-latent reconstruction (seed {sm.get('latent_seed')})"
        )
        notes.append(what)
    return (
        "**RA map.** The authors' code (github.com/ci-ber/RA) smooths each saliency map "
        "(σ = 2) before the product and equalises with scikit-image's CLAHE (defaults) after a "
        f"per-image min–max stretch (`score.ra_map: published`). Here: {'; '.join(notes)}."
    )


def thin_localization(an: Analysis) -> str | None:
    if max((m.localization.n_images for m in an.models.values()), default=0) <= 0:
        return None
    return (
        "**Localization is thin.** NIH boxes exist for 880 images and 8 findings; the hit rate "
        "uses the single argmax pixel of each map and is compared with its chance level "
        "(the fraction of the image covered by boxes)."
    )


def excluded_data(an: Analysis) -> str | None:
    if not an.data.n_excluded:
        return None
    return (
        f"**Excluded data.** {an.data.n_excluded} metadata row(s) or image(s) were left out "
        "(section 1, data issues). If what was lost is not a random sample (one view, one "
        "site, one finding), the results describe the rest, not the whole set."
    )


CAVEATS: tuple[Callable[[Analysis], str | None], ...] = (
    noisy_labels,
    benchmark_split,
    missing_metadata,
    excluded_data,
    under_trained,
    synthetic_data,
    view_confounder,
    clustered_images,
    validation_threshold,
    intervals_and_multiplicity,
    fixed_baselines,
    ra_saliency,
    ra_map_variant,
    thin_localization,
)


def caveats(an: Analysis) -> list[str]:
    """The caveats that apply to this run, in order."""
    return [text for caveat in CAVEATS if (text := caveat(an)) is not None]
