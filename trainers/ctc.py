"""CTC characters, greedy decoding and error rates, shared by the CTC training loss and the CTC probe.

Conventions: index 0 is the blank and ``alphabet[i]`` is index ``i + 1``, so logits have
``len(alphabet) + 1`` classes. Transcripts are lower-cased before they are encoded or scored.

Greedy (best-path) decoding takes the arg-max class of every valid frame, collapses runs of the same
class, then drops blanks: ``a a - a b b -`` decodes to ``aab``.

Error rates are corpus rates, as ASR toolkits report them: the edit distances of all utterances summed,
divided by the summed reference lengths (characters for CER, whitespace-separated words for WER), computed
with :func:`torchaudio.functional.edit_distance`. Predicting the empty string scores exactly 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torchaudio.functional import edit_distance

__all__ = ["BatchDecoding", "ErrorRates", "encode", "error_rates", "greedy_decode", "greedy_decode_ids"]


def encode(text: str, alphabet: str) -> list[int]:
    """Class indices of a transcript (lower-cased; blank 0, ``alphabet[i]`` -> ``i + 1``).

    Raises:
        ValueError: the transcript holds characters outside ``alphabet`` (all of them are named).

    Example:
        >>> encode("Ab a", " ab")
        [2, 3, 1, 2]
    """
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    text = text.lower()
    bad = sorted({c for c in text if c not in index})
    if bad:
        raise ValueError(f"characters {bad} are not in the alphabet {alphabet!r}")
    return [index[c] for c in text]


def greedy_decode_ids(best: Tensor, lengths: Tensor, alphabet: str) -> list[str]:
    """Best-path decoding of arg-max class indices.

    Args:
        best: ``(B, T)`` class index of every frame.
        lengths: ``(B,)`` valid frames (frames beyond are padding and ignored).
        alphabet: the characters of classes ``1..len(alphabet)``.

    Returns:
        one string per utterance: repeats collapsed, then blanks dropped.

    Raises:
        ValueError: a class index outside ``0..len(alphabet)``.
    """
    best, lengths = best.cpu(), lengths.cpu()
    if best.numel() and (int(best.min()) < 0 or int(best.max()) > len(alphabet)):
        raise ValueError(f"class indices span {int(best.min())}..{int(best.max())}; "
                         f"the alphabet has {len(alphabet)} characters + blank")  # fmt: skip
    out = []
    for row, n in zip(best, lengths.tolist()):
        ids = torch.unique_consecutive(row[: int(n)])
        out.append("".join(alphabet[i - 1] for i in ids.tolist() if i != 0))
    return out


def greedy_decode(logits: Tensor, lengths: Tensor, alphabet: str) -> list[str]:
    """Best-path decoding of CTC logits (or log-probabilities).

    Args:
        logits: ``(B, T, len(alphabet) + 1)``, blank at index 0.
        lengths: ``(B,)`` valid frames.
        alphabet: the non-blank characters.

    Returns:
        one string per utterance.

    Raises:
        ValueError: the class count is not ``len(alphabet) + 1``.

    Example:
        >>> import torch
        >>> frames = torch.tensor([[1, 1, 0, 1, 2, 2, 0]])      # a a - a b b -
        >>> greedy_decode(torch.nn.functional.one_hot(frames, 3).float(), torch.tensor([7]), "ab")
        ['aab']
    """
    if logits.shape[-1] != len(alphabet) + 1:
        raise ValueError(f"{logits.shape[-1]} classes for {len(alphabet)} characters + blank")
    return greedy_decode_ids(logits.argmax(-1), lengths, alphabet)


@dataclass(frozen=True)
class ErrorRates:
    """Corpus error rates and the counts they come from.

    Attributes:
        cer: character edit distance / reference characters.
        wer: word edit distance / reference words.
        char_errors, chars: the summed character edit distance and reference length.
        word_errors, words: the same over whitespace-separated words.
    """

    cer: float
    wer: float
    char_errors: int
    chars: int
    word_errors: int
    words: int


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> ErrorRates:
    """CER and WER of ``hypotheses`` against ``references`` (both lower-cased first).

    Raises:
        ValueError: the two differ in length, or the references hold no character (or no word).

    Example:
        >>> r = error_rates(["the cat", ""], ["the cat sat", "a"])
        >>> r.char_errors, r.chars, r.word_errors, r.words
        (5, 12, 2, 4)
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    c_err = c_n = w_err = w_n = 0
    for hyp, ref in zip(hypotheses, references):
        hyp, ref = hyp.lower(), ref.lower()
        c_err += edit_distance(hyp, ref)
        c_n += len(ref)
        w_err += edit_distance(hyp.split(), ref.split())
        w_n += len(ref.split())
    if c_n == 0 or w_n == 0:
        raise ValueError("the references hold no characters or no words; error rates are undefined")
    return ErrorRates(c_err / c_n, w_err / w_n, c_err, c_n, w_err, w_n)


@dataclass(frozen=True)
class BatchDecoding:
    """The arg-max paths of one training batch, decoded and scored only when asked (on logged steps).

    Taking the arg-max is one cheap tensor op on logits the loss already computed; the edit distances
    are Python loops, so the trainer computes them only for the steps it logs.

    Attributes:
        best: ``(B, T)`` arg-max class of every frame (detached).
        lengths: ``(B,)`` valid frames.
        references: the batch's transcripts.
        alphabet: the non-blank characters.
    """

    best: Tensor
    lengths: Tensor
    references: tuple[str, ...]
    alphabet: str

    def hypotheses(self) -> list[str]:
        """The greedy transcripts."""
        return greedy_decode_ids(self.best, self.lengths, self.alphabet)

    def error_rates(self) -> ErrorRates:
        """CER and WER of the greedy transcripts against the references."""
        return error_rates(self.hypotheses(), self.references)
