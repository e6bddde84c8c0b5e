"""A bag-of-words text tower for CLIP models (Radford et al. 2021, Fig. 2: "bag of words contrastive").

Token embeddings averaged over the caption's tokens (``nn.EmbeddingBag``, padding excluded), a
LayerNorm and a linear projection into the joint space. It takes the same token ids as open_clip's
tokenizer and plugs into ``open_clip.CustomTextCLIP`` as its ``text`` module, so the model trains
with the same loss and is evaluated by the same zero-shot code as a transformer text tower.

Why it exists: on the embedded world, a 2-layer transformer text tower learns which caption
word names the object an order of magnitude more slowly than the image tower learns shapes
(``benchmarks/bench_clip_convergence.py`` measures it); the bag of words has no attention to
learn, so CLIP trains in the quickstart's CPU budget. Captions here are short lists of words
whose order carries little, which is where a bag of words loses nothing.
"""

from __future__ import annotations

import torch
from torch import nn

PAD_TOKEN = 0  # open_clip's SimpleTokenizer pads with id 0


class BagOfWordsText(nn.Module):
    """(B, L) token ids → (B, embed_dim): mean of the non-padding tokens' embeddings, LayerNorm,
    linear projection. `context_length` and `vocab_size` are those of the tokenizer."""

    def __init__(self, vocab_size: int, width: int, embed_dim: int, context_length: int,
                 init_std: float = 0.02):
        super().__init__()
        self.vocab_size, self.context_length, self.width = vocab_size, context_length, width
        self.token_embedding = nn.EmbeddingBag(vocab_size, width, mode="mean", padding_idx=PAD_TOKEN)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Linear(width, embed_dim, bias=False)
        with torch.no_grad():  # open_clip's token-embedding scale, so one learning rate suits both towers
            self.token_embedding.weight.normal_(0.0, init_std)
            self.token_embedding.weight[PAD_TOKEN].zero_()
            nn.init.normal_(self.text_projection.weight, std=width ** -0.5)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        pooled = self.token_embedding(text)  # (B, width); rows of padding only would give zeros
        return self.text_projection(self.ln_final(pooled))

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        for param in self.parameters():
            param.requires_grad = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        pass  # nothing deep enough to checkpoint
