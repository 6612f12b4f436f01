"""A few seconds of the load_model fuzzer (tests/fuzz_load_model.py, which runs longer as
a script): hypothesis-mutated model files (truncated, bit-flipped, oversized arrays, wrong
versions, rewritten configs and .npy headers behind valid CRCs, zip bombs) raise ValueError
naming the file or load as a valid, working model; never a crash, hang or other error."""
import sys

from fuzz_load_model import Stats, run

EXAMPLES = 300  # deterministic (derandomized), a few seconds


def test_mutated_model_files_raise_value_error_or_load_a_valid_model(tmp_path):
    stats = Stats()
    run(EXAMPLES, stats, str(tmp_path / "fuzzed.fastnn"))
    print(f"\nload_model fuzz: {stats.tried} inputs, {stats.outcomes}", file=sys.stderr)
    assert stats.tried >= EXAMPLES
    # most damage is caught, and some mutations still describe valid models (so the
    # checks are not simply refusing everything)
    assert stats.outcomes.get("ValueError", 0) > stats.tried // 2
    assert stats.outcomes.get("loaded", 0) > 0
    mutations = {key.split(":")[0] for key in stats.by_mutation}
    assert mutations == {"byte_mutation", "config_mutation", "npy_mutation", "member_mutation"}
