"""Evaluation metrics for sequence outputs: BLEU (d2l's sentence form and corpus BLEU)."""

import collections
import math
from typing import Counter, Hashable, Iterable, Sequence, Tuple, Union

#: A sentence: a string (split at whitespace) or a sequence of tokens.
Sentence = Union[str, Sequence[Hashable]]


def _tokens(seq: Sentence) -> Sequence[Hashable]:
    return seq.split() if isinstance(seq, str) else list(seq)


def _ngrams(tokens: Sequence[Hashable], n: int) -> Counter[Tuple[Hashable, ...]]:
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu(pred: Sentence, label: Sentence, k: int = 4) -> float:
    """d2l's BLEU of one prediction against one reference (token lists or strings):

        exp(min(0, 1 - len(label) / len(pred))) * prod_{n=1..k} p_n ** (1 / 2**n)

    with p_n the clipped n-gram precision; a prediction with no n-grams of some
    order n <= k scores 0 (d2l would divide by zero), an empty prediction 0.
    """
    pred, label = _tokens(pred), _tokens(label)
    if not pred:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len(label) / len(pred)))
    for n in range(1, k + 1):
        total = len(pred) - n + 1
        if total <= 0:
            return 0.0
        label_counts = _ngrams(label, n)
        matches = sum(min(c, label_counts[g]) for g, c in _ngrams(pred, n).items())
        score *= (matches / total) ** (0.5 ** n)
    return score


def corpus_bleu(preds: Iterable[Sentence], labels: Iterable[Sentence], k: int = 4) -> float:
    """Corpus BLEU (Papineni et al., 2002), one reference per prediction: the clipped
    n-gram matches and counts are summed over the corpus, the precisions combined by a
    geometric mean with weights 1/k, times the brevity penalty exp(1 - r/c) when the
    total prediction length c is below the reference length r."""
    preds, labels = [_tokens(p) for p in preds], [_tokens(l) for l in labels]
    if len(preds) != len(labels):
        raise ValueError(f"expected as many predictions as references, got {len(preds)} and "
                         f"{len(labels)}")
    c = sum(len(p) for p in preds)
    r = sum(len(l) for l in labels)
    if c == 0:
        return 0.0
    log_p = 0.0
    for n in range(1, k + 1):
        matches = total = 0
        for p, l in zip(preds, labels):
            label_counts = _ngrams(l, n)
            pc = _ngrams(p, n)
            matches += sum(min(cnt, label_counts[g]) for g, cnt in pc.items())
            total += sum(pc.values())
        if matches == 0 or total == 0:
            return 0.0
        log_p += math.log(matches / total) / k
    bp = 1.0 if c >= r else math.exp(1 - r / c)
    return bp * math.exp(log_p)
