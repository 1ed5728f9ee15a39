import pytest

from medvlp.knowledge.teachers import HFLocalTeacher, TeacherStats, structure_with_teacher


def tiny_teacher():
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["heart size normal lungs clear { } findings present absent null"],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=fast.vocab_size, n_positions=512, n_embd=16,
                                       n_layer=1, n_head=2))
    return HFLocalTeacher(model=model, tokenizer=fast, max_new_tokens=8, name="hf:tiny-gpt2")


def test_random_tiny_lm_ends_unanswerable_after_retries():
    t = tiny_teacher()
    stats = TeacherStats()
    rec = structure_with_teacher(t, "Heart size normal.", ("cardiomegaly",), max_attempts=2, stats=stats)
    assert stats.calls == 2 and stats.unanswerable == 1
    assert rec.verifier.passed is False and rec.verifier.reason.startswith("no valid answer after 2")
    assert rec.states == {"cardiomegaly": None} and rec.provenance.source == "teacher:hf:tiny-gpt2"
