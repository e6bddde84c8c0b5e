"""Data sources (one loader per format), evaluation sets, and labels from captions."""

from .csv_source import ImageCaptionDataset, load_images, read_caption_table
from .imagefolder import EvalImageFolder, load_all, masked_argmax, masked_topk, subset_mask
from .text_match import TextMatcher, match_report

__all__ = [
    "EvalImageFolder", "ImageCaptionDataset", "TextMatcher", "load_all", "load_images", "masked_argmax",
    "masked_topk", "match_report", "read_caption_table", "subset_mask",
]
