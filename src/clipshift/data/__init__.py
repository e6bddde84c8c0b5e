"""Data sources (one loader per format), evaluation sets, and labels from captions.

- :mod:`.text_match`: labels from captions (:class:`TextMatcher`, :func:`match_report`).
- :mod:`.csv_source`: training tables ``filepath,caption[,label]`` (:func:`read_caption_table`,
  :class:`ImageCaptionDataset`, :func:`load_images`).
- :mod:`.imagefolder`: evaluation sets as ImageFolder trees (:class:`EvalImageFolder`,
  :func:`load_all`) and subset-masked scoring (:func:`masked_argmax`, :func:`masked_topk`).
- :mod:`.eval_sets`: the one opener of evaluation sets (``open_eval_set``: names and folders by one
  rule, ImageNet-family suites as distributed, any other set an ImageFolder tree).
- :mod:`.imagenet`: ImageNet and its shifts as distributed (``open_suite``, ``EvalSuite``);
  :mod:`.imagenet_classes`: class subsets (wnid files, ``restrict_suite``), ImageNet names and
  WordNet synonyms (``imagenet_synonyms``).
- :mod:`.lazy`: :class:`LazyImages`, training images decoded per batch; :mod:`.sources`: training
  sources read into rows, class filters and nested subsets, and the registry of source types
  (``SOURCE_TYPES``); :mod:`.shards`: webdataset streams; :mod:`.streamed`: a stream's seeded take;
  :mod:`.mixture`: file-backed rows and streams interleaved by weight (``MixedData``).
"""

from ._images import ImageDecodeError, decode_rgb
from .csv_source import ImageCaptionDataset, load_images, read_caption_table
from .lazy import LazyImages
from .eval_sets import open_eval_set
from .imagefolder import (IMAGE_EXTENSIONS, EvalImageFolder, load_all, masked_argmax, masked_topk,
                          skip_none_collate, subset_mask)
from .text_match import TextMatcher, match_report, read_synonyms

__all__ = [
    "IMAGE_EXTENSIONS", "EvalImageFolder", "ImageCaptionDataset", "ImageDecodeError", "LazyImages", "TextMatcher",
    "decode_rgb", "load_all", "load_images", "masked_argmax", "masked_topk", "match_report", "open_eval_set",
    "read_caption_table",
    "read_synonyms", "skip_none_collate", "subset_mask",
]
