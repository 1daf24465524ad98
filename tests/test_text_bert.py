"""MiniLM (BERT) encoder: parity with PyTorch BertModel on the shipped all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch  # test dependency (requirements-test.txt)
import transformers

from motionaura_jax.models.text import bert
from motionaura_jax.models.text.loading import CheckpointReader
from motionaura_jax.models.text.tokenize import FileTokenizer
from motionaura_jax.parallel.sharding import logical_axes_tree

SENTENCES = [
    "a dog runs on the beach",
    "a puppy runs along the shore",
    "stock prices fell",
    "A much longer sentence, with punctuation; UPPER case and numbers 1234, that runs past the max length.",
]


@pytest.fixture(scope="module")
def minilm():
    folder = bert.minilm_dir()
    model, variables = bert.load_bert_encoder(folder)
    return folder, model, variables


def test_tokenizer_matches_autotokenizer(minilm):
    folder, _, _ = minilm
    ids_bl, mask_bl = FileTokenizer(folder, 24)(SENTENCES)
    expected = transformers.AutoTokenizer.from_pretrained(str(folder))(
        SENTENCES, padding="max_length", truncation=True, max_length=24, return_tensors="np"
    )
    np.testing.assert_array_equal(ids_bl, expected["input_ids"])
    np.testing.assert_array_equal(mask_bl, expected["attention_mask"].astype(bool))
    assert mask_bl[3].all() and not mask_bl[0].all()  # one truncated, the others padded


def test_parity_with_pytorch_and_ranking(minilm):
    folder, model, variables = minilm
    ids_bl, mask_bl = FileTokenizer(folder, 24)(SENTENCES)
    reference = transformers.BertModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        expected = reference(
            input_ids=torch.from_numpy(ids_bl.astype(np.int64)),
            attention_mask=torch.from_numpy(mask_bl.astype(np.int64)),
        ).last_hidden_state.numpy()
    tokens_bld = np.asarray(jax.jit(model.apply)(variables, ids_bl, mask_bl))
    diff_all = np.abs(tokens_bld - expected).max()
    diff_real = np.abs(tokens_bld - expected)[mask_bl].max()
    print(f"MiniLM parity: max abs diff {diff_all:.2e} (all positions), {diff_real:.2e} (real tokens)")
    assert diff_all <= 1e-4

    emb_bd = np.asarray(bert.mean_pool(tokens_bld, mask_bl, normalize=True))
    close, far = float(emb_bd[0] @ emb_bd[1]), float(emb_bd[0] @ emb_bd[2])
    print(f"cos(dog/beach, puppy/shore) = {close:.3f}, cos(dog/beach, stock prices) = {far:.3f}")
    assert close > far + 0.3
    # The same ranking from the reference's own pooled output, so the check is not circular.
    ref_bd = np.asarray(bert.mean_pool(expected, mask_bl, normalize=True))
    np.testing.assert_allclose(emb_bd, ref_bd, atol=1e-5)


def test_every_param_has_logical_axes(minilm):
    folder, model, _ = minilm
    names = logical_axes_tree(bert.abstract_params(model.config))
    leaves = jax.tree.leaves(names, is_leaf=lambda x: x is None or isinstance(x, tuple))
    assert all(isinstance(n, tuple) and any(n) for n in leaves)
    # Every tensor of the checkpoint but the pooler (unused by mean pooling) and position_ids (a buffer).
    tensors = [
        n for n in CheckpointReader(folder).names() if not n.startswith("pooler") and "position_ids" not in n
    ]
    assert len(leaves) == len(tensors) == 101
