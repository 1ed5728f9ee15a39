"""medvlp.data: readers, ImageSet, splits, transforms, torch datasets, data root.

    from medvlp.data import load_dataset, list_datasets
    ds = load_dataset("nih1000")           # bundled, no data root needed
    print(ds.describe())
"""
from medvlp.data.imageset import ImageSet
from medvlp.data.registry import list_datasets, load_dataset
from medvlp.data.root import data_root

__all__ = ["ImageSet", "data_root", "list_datasets", "load_dataset"]
