"""Gathering ground-truth preservation images into a folder of the data root, from a URL
list (downloaded with img2dataset, the `gather` extra) or from a big local folder.

    from edlib.gather import gather, format_report
    report = gather("data", "pool_folder_or_list.parquet", "ground_truth", count=500, per_epoch=50)
    print(format_report(report))

Modules: `flow` (the whole gather), `url_list` and `folder_pool` (the sources),
`img2dataset_runner` (the download, in a subprocess), `checks` and `signature` (what is
kept: size, aspect ratio, near-duplicates), `target` and `journal` (the folder and its
resumable record), `multiply` (multiply.txt), `report` (gather.json).
"""

from edlib.gather.errors import GatherError
from edlib.gather.flow import GatherOptions, gather, gathered_files
from edlib.gather.img2dataset_runner import DownloadSettings
from edlib.gather.report import REPORT_NAME, GatherReport, format_report

__all__ = ["REPORT_NAME", "DownloadSettings", "GatherError", "GatherOptions", "GatherReport", "format_report", "gather", "gathered_files"]
