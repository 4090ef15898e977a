"""Data: MNIST and Fashion-MNIST from IDX files to mini-batches.

    idx.py       the IDX file format: encode, decode, read, write (atomically)
    registry.py  the data sets: files, shapes, checksums, mirrors; verifying a file
    download.py  the download from the mirrors into the cache: deadlines, minimum rate
    sources.py   where a data set is found: the lookup order, the bundled sample,
                 :func:`load_dataset`
    batches.py   images as floats, shuffled mini-batches, binarization, random shifts

The names below are the public API (``from scratchvae import data; data.load_dataset``).
The module constants that tests move are read where they live:
``sources.SYSTEM_DATA_DIR``, and the timeouts, deadline and minimum rate of
:mod:`scratchvae.data.download`.
"""
from .batches import BatchIterator, images_to_float, iterate_batches, random_shift
from .idx import (CUT_SHORT, IDX_TYPES, IMAGES_MAGIC, LABELS_MAGIC, DataError, idx_decode,
                  idx_encode, read_bytes, read_idx, write_idx)
from .registry import (FULL_DATASETS, REGISTRY, ROLES, SAMPLES, DatasetSpec, FileSpec,
                       get_spec, load_verified)
from .download import (DataNotFoundError, cache_dir, download_dataset, reachable_mirrors,
                       stale_temporary_files)
from .sources import (SAMPLE_DIR, Dataset, dataset_files, load_dataset, load_directory,
                      load_sample, locate_dataset, search_roots)

__all__ = ["BatchIterator", "images_to_float", "iterate_batches", "random_shift",
           "CUT_SHORT", "IDX_TYPES", "IMAGES_MAGIC", "LABELS_MAGIC", "DataError", "idx_decode",
           "idx_encode", "read_bytes", "read_idx", "write_idx",
           "FULL_DATASETS", "REGISTRY", "ROLES", "SAMPLES", "DatasetSpec", "FileSpec",
           "get_spec", "load_verified",
           "SAMPLE_DIR", "Dataset", "DataNotFoundError", "cache_dir", "dataset_files",
           "download_dataset", "load_dataset", "load_directory", "load_sample",
           "locate_dataset", "reachable_mirrors", "search_roots", "stale_temporary_files"]
