"""Motion-to-text (``m2t``) evaluation: captioning metrics and text-motion scores of generated captions.

**Captioning metrics.** BLEU-1..4, ROUGE-L and CIDEr(-D) come from ``pycocoevalcap`` (the COCO
caption evaluation code motion-to-text papers use, e.g. TM2T and MotionGPT), through its
``Bleu``/``Rouge``/``Cider`` scorer classes, one hypothesis per test item against all captions of
the item. The COCO pipeline first runs its ``PTBTokenizer``, a Java program (Stanford CoreNLP);
``tokenizer="simple"`` (the default) does what it does for these captions in Python instead:
lower-case, split words from punctuation (``[a-z0-9]+`` runs, with ``'s``-style suffixes split
off), drop the punctuation marks PTBTokenizer removes, join with single spaces. Short
plain-English captions tokenise identically; rare constructs (hyphenated words, abbreviations with
periods) may differ by a token. ``tokenizer="ptb"`` runs the Java tokenizer when ``java`` is on the
PATH (an error names the fix otherwise). CIDEr's IDF comes from the scored corpus (the test split),
so CIDEr is only comparable between runs on the same split.

**Text-motion scores.** R-precision (top-1/2/3, batches of 32 as the T2M protocol) and MM-Dist of
the generated captions against their motions, through the Guo evaluator (``MotionTextScorer``).
The text encoder reads ``word/POS`` tokens; the reference's dataset tokens come from spaCy
(lemmas for nouns and verbs except ``left``, universal POS tags, alphabetic tokens only). Generated
captions have no tags, so ``CaptionTagger`` tags them with the dataset's own spaCy tags: a lexicon
``surface word -> (lemma, tag)`` learned from the captions of a split (each caption whose
alphabetic words align one-to-one with its tokens; the most frequent reading wins). Words never
seen get a rule: ``-ing`` VERB, ``-ly`` ADV, otherwise NOUN, lemma = the word. Unlike spaCy this
ignores context (``left`` is always tagged as most often in the data), so a caption's POS one-hots
can differ from what spaCy would give; the evaluator's VIP categories (body parts, directions...)
override the tag for the words that matter most anyway. The ``Real text`` row scores the dataset
captions (with their spaCy tokens) the same way, as the reference for the generated row.

Under ``torchrun`` the batches of each replication are shared by the ranks and gathered; every
number equals the one-process run.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from data.datasets import eval_collate, replication_batches
from data.layout import DatasetPaths, read_captions, read_split
from data.progress import progress_bar
from data.runtime import gather_dicts, group_rank_world
from eval.harness import EvaluationHarness, batch_seed
from eval.llm_runner import MotionLLMRunner
from eval.metrics import mean_ci95, text_motion_scores_batched
from eval.tasks import generate_captions

logger = logging.getLogger(__name__)

CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider")
TEXT_MOTION_METRICS = ("top1", "top2", "top3", "mm_dist")
REAL_TEXT = "Real text"
_WORD_RE = re.compile(r"[a-z0-9]+|'[a-z]+")
_ALPHA_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def simple_tokenize(text: str) -> str:
    """Lower-cased words without punctuation, single-spaced (the ``PTBTokenizer`` result for plain captions).

    >>> simple_tokenize("A person's arm waves, then stops.")
    "a person 's arm waves then stops"
    """
    return " ".join(_WORD_RE.findall(text.lower()))


def _ptb_tokenize(refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> tuple[dict, dict]:
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption_tokenizer=ptb needs java on the PATH; install a JRE or use caption_tokenizer=simple"
        )
    tok = PTBTokenizer()
    wrap = lambda d: {k: [{"caption": c} for c in v] for k, v in d.items()}  # noqa: E731
    return tok.tokenize(wrap(refs)), tok.tokenize(wrap(hyps))


def caption_scores(
    references: Sequence[Sequence[str]], hypotheses: Sequence[str], tokenizer: str = "simple"
) -> dict[str, float]:
    """Corpus BLEU-1..4, ROUGE-L and CIDEr of ``hypotheses[i]`` against ``references[i]`` (pycocoevalcap).

    Args:
        references: per item, its reference captions (at least one).
        hypotheses: per item, one generated caption.
        tokenizer: ``simple`` (module docstring) or ``ptb`` (pycocoevalcap's Java tokenizer).

    Returns:
        ``{bleu1..bleu4, rouge_l, cider}``: BLEU as pycocoevalcap's corpus score (clipped n-gram
        precisions and one brevity penalty over the corpus), ROUGE-L (beta 1.2) and CIDEr-D
        averaged over items.
    """
    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    if any(len(r) == 0 for r in references):
        raise ValueError("every item needs at least one reference caption")
    if tokenizer == "simple":
        refs = {i: [simple_tokenize(c) for c in r] for i, r in enumerate(references)}
        hyps = {i: [simple_tokenize(h)] for i, h in enumerate(hypotheses)}
    elif tokenizer == "ptb":
        refs, hyps = _ptb_tokenize({i: list(r) for i, r in enumerate(references)},
                                   {i: [h] for i, h in enumerate(hypotheses)})  # fmt: skip
    else:
        raise ValueError(f"tokenizer={tokenizer!r}: use simple or ptb")
    # pycocoevalcap's BLEU asserts a non-empty hypothesis; an empty caption scores as one unknown word
    hyps = {i: [h[0] or "<empty>"] for i, h in hyps.items()}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    rouge, _ = Rouge().compute_score(refs, hyps)
    cider, _ = Cider().compute_score(refs, hyps)
    out = {f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}
    out.update(rouge_l=float(rouge), cider=float(cider))
    return out


class CaptionTagger:
    """``word/POS`` tokens for untagged captions, from a dataset's spaCy-tagged captions (module docstring).

    Args:
        lexicon: surface word -> (lemma, universal POS tag).
    """

    def __init__(self, lexicon: dict[str, tuple[str, str]]):
        self.lexicon = dict(lexicon)
        self.unknown = Counter()
        """Words tagged by the fallback rules (for the report)."""

    @staticmethod
    def words(caption: str) -> list[str]:
        """Lower-cased alphabetic words (hyphens removed first, as the HumanML3D text processing does)."""
        return [w for w in _ALPHA_RE.findall(caption.replace("-", "").lower()) if w.isalpha()]

    @classmethod
    def from_captions(
        cls, lines: Iterable[tuple[str, Sequence[str]]]
    ) -> tuple[CaptionTagger, dict[str, int]]:
        """Learn the lexicon from ``(caption, word/POS tokens)`` pairs; returns it and alignment counts."""
        readings: dict[str, Counter] = defaultdict(Counter)
        used = skipped = 0
        for caption, tokens in lines:
            words = cls.words(caption)
            if len(words) != len(tokens):
                skipped += 1
                continue
            used += 1
            for w, tok in zip(words, tokens, strict=True):
                lemma, _, pos = tok.rpartition("/")
                readings[w][(lemma, pos)] += 1
        lexicon = {w: c.most_common(1)[0][0] for w, c in readings.items()}
        return cls(lexicon), {"captions_aligned": used, "captions_skipped": skipped, "words": len(lexicon)}

    @classmethod
    def from_dataset(cls, root: str, split: str = "train") -> tuple[CaptionTagger, dict[str, int]]:
        """The lexicon of the captions of ``split`` under the HumanML3D-layout ``root``."""
        paths = DatasetPaths(root)
        lines = (
            (line.caption, line.tokens) for mid in read_split(root, split)
            for line in read_captions(paths.text_file(mid))
        )  # fmt: skip
        return cls.from_captions(lines)

    def tokens(self, caption: str) -> list[str]:
        """``lemma/POS`` tokens of ``caption``."""
        out = []
        for w in self.words(caption):
            if w in self.lexicon:
                lemma, pos = self.lexicon[w]
            else:
                self.unknown[w] += 1
                pos = "VERB" if w.endswith("ing") else "ADV" if w.endswith("ly") else "NOUN"
                lemma = w
            out.append(f"{lemma}/{pos}")
        return out or ["unk/OTHER"]


def _summary(values: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out = {}
    for k, v in values.items():
        m, c = mean_ci95(np.asarray(v, dtype=np.float64))
        out[k] = {"mean": float(m), "ci95": float(c)}
    return out


def evaluate_captioning(
    runner: MotionLLMRunner,
    harness: EvaluationHarness,
    tagger: CaptionTagger,
    *,
    tokenizer: str = "simple",
    sample: bool = False,
) -> dict[str, Any]:
    """``m2t`` on the harness's test items: every ground-truth crop captioned, for each replication.

    Each replication re-draws the crops (and the item's caption for the ``Real text`` row) and uses
    the harness's batches (``drop_last``, ``batch_size`` items). The motion is the crop encoded with
    the VQ-VAE, rendered into the ``m2t`` prompt; decoding is greedy unless ``sample``.

    Returns (on rank 0; other ranks get ``{}``): ``rows`` (``m2t`` and ``Real text``) with ``summary``
    (mean ± 95% CI) and ``per_replication`` values, ``traces`` (replication 0: item name, references,
    generated caption, prompt, codes), ``tagger`` (unknown words) and the settings.
    """
    ds, bs, scorer = harness.dataset, harness.batch_size, harness.scorer
    text_cache, offsets = harness.text_embeddings()
    rank, world = group_rank_world()
    rows: dict[str, dict[str, list[float]]] = {
        "m2t": {k: [] for k in (*CAPTION_METRICS, *TEXT_MOTION_METRICS)},
        REAL_TEXT: {k: [] for k in TEXT_MOTION_METRICS},
    }
    traces: list[dict[str, Any]] = []
    for r in range(harness.replications):
        batches = replication_batches(len(ds), batch_size=bs, seed=harness.seed, replication=r)
        mine = {}
        for k in progress_bar(range(rank, len(batches), world), desc=f"m2t {r}", leave=False,
                      disable=not (harness.progress and rank == 0)):  # fmt: skip
            idx = batches[k]
            gt = eval_collate([ds.get_item(int(i), r) for i in idx])
            codes = runner.encode_motions([ds.raw_motion(int(i), r) for i in idx])
            gens = generate_captions(runner, codes, seed=batch_seed(harness.seed, r, k), sample=sample)
            hyps = [g.text for g in gens]
            cap_rows = [offsets[i] + ds.draw(int(i), r).caption_index for i in idx]
            mine[k] = {
                "items": [int(i) for i in idx], "hyps": hyps,
                "motion": scorer.embed_padded(gt.motions, gt.m_lengths),
                "gen_text": scorer.embed_texts([tagger.tokens(h) for h in hyps]),
                "real_text": text_cache[cap_rows],
                "prompts": [g.steps[0].prompt for g in gens] if r == 0 else [],
                "codes": codes if r == 0 else [],
                "names": list(gt.names),
            }  # fmt: skip
        gathered = gather_dicts(mine)
        if rank != 0:
            continue
        recs = [gathered[k] for k in range(len(batches))]
        motion = np.concatenate([x["motion"] for x in recs])
        for name, key in (("m2t", "gen_text"), (REAL_TEXT, "real_text")):
            rp, mm = text_motion_scores_batched(np.concatenate([x[key] for x in recs]), motion,
                                                batch_size=bs, top_k=3)  # fmt: skip
            for j in range(3):
                rows[name][f"top{j + 1}"].append(float(rp[j]))
            rows[name]["mm_dist"].append(float(mm))
        items = [i for x in recs for i in x["items"]]
        hyps = [h for x in recs for h in x["hyps"]]
        refs = [[c.caption for c in ds.index.entries[i].captions] for i in items]
        for key, v in caption_scores(refs, hyps, tokenizer=tokenizer).items():
            rows["m2t"][key].append(v)
        if r == 0:
            for x in recs:
                for j, i in enumerate(x["items"]):
                    traces.append({
                        "name": x["names"][j], "references": [c.caption for c in ds.index.entries[i].captions],
                        "caption": x["hyps"][j], "prompt": x["prompts"][j], "codes": x["codes"][j],
                    })  # fmt: skip
        logger.info("m2t replication %d: %s", r, {k: round(v[-1], 4) for k, v in rows["m2t"].items()})
    if rank != 0:
        return {}
    return {
        "rows": {name: {"summary": _summary(vals), "per_replication": vals} for name, vals in rows.items()},
        "traces": traces,
        "tagger": {
            "unknown_words": dict(tagger.unknown.most_common(50)),
            "unknown_word_count": int(sum(tagger.unknown.values())),
        },  # fmt: skip
        "caption_tokenizer": tokenizer,
        "replications": harness.replications,
        "samples_per_replication": (len(ds) // bs) * bs,
    }


def captioning_markdown(result: dict[str, Any]) -> str:
    """Table: rows ``m2t`` and ``Real text``; BLEU-1/4, ROUGE-L, CIDEr, R-precision, MM-Dist (mean ± CI95)."""
    cols = [("bleu1", "BLEU-1"), ("bleu4", "BLEU-4"), ("rouge_l", "ROUGE-L"), ("cider", "CIDEr"),
            ("top1", "Top-1"), ("top2", "Top-2"), ("top3", "Top-3"), ("mm_dist", "MM-Dist")]  # fmt: skip
    lines = ["| Captions | " + " | ".join(c for _, c in cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for name, row in result["rows"].items():
        s = row["summary"]
        cells = [f"{s[k]['mean']:.3f} ± {s[k]['ci95']:.3f}" if k in s else "-" for k, _ in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{result['replications']} replications of {result['samples_per_replication']} test crops; "
        f"captions tokenised with `{result['caption_tokenizer']}`; ± is the 95% CI."
    )
    return "\n".join(lines) + "\n"
