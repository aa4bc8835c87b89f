"""CAPPr-style checks shared by the drop-in's test modules (CAPPr's tests/_base.py idea, our own code): each
function checks one output of ours for form and against the same call of CAPPr's reference."""

import numpy as np

ATOL = 1e-4  # CAPPr's own tolerance against its references

PROMPTS = ["Question: What is the capital", "The quick brown fox", "Yes or no? Maybe"]
COMPLETIONS = {
    "multi": ["Paris", "Berlin is", "the lazy dog"],
    "single_token": ["A", "B", "C"],  # one token each: CAPPr's shortcut reads the prompt's next-token row
    "prefixes": ["1", "10", "100"],  # a completion that is a prefix of another
}


def assert_log_probs_close(ours, reference, single=False):
    """Same nesting ([i][j][k], or [j][k] for a single prompt), Python floats, every value within ATOL."""
    ours, reference = ([ours], [reference]) if single else (ours, reference)
    assert isinstance(ours, list) and len(ours) == len(reference)
    for row, ref_row in zip(ours, reference):
        assert len(row) == len(ref_row)
        for lps, ref_lps in zip(row, ref_row):
            assert len(lps) == len(ref_lps) > 0
            assert all(isinstance(x, float) for x in lps)
            np.testing.assert_allclose(lps, np.asarray(ref_lps, dtype=float), atol=ATOL, rtol=0)


def assert_proba_close(ours, reference, normalize=True):
    """An array of the reference's shape, rows summing to 1 when normalized, within ATOL."""
    assert isinstance(ours, np.ndarray) and ours.shape == np.shape(reference)
    assert np.all(ours >= 0)
    if normalize:
        np.testing.assert_allclose(ours.sum(axis=-1), 1, atol=1e-6)
    np.testing.assert_allclose(ours, reference, atol=ATOL, rtol=0)


def assert_ragged_close(ours, reference, normalize):
    """Examples with different numbers of completions: a list of 1-D arrays."""
    assert isinstance(ours, list) and len(ours) == len(reference)
    for row, ref_row, norm in zip(ours, reference, normalize):
        assert_proba_close(row, ref_row, norm)
