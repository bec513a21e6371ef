"""pyarrow reads the Parquet files Sluice wrote, for the filesystem connector's tests.

    parquet_rows.py DIR   # every row of the Parquet files under DIR (Hive partitions
                          # `k=v/` are columns), one `a|b|c` a line, columns by name order

Hidden files (`.part-...inprogress`, `_SUCCESS`) are not read, as Flink's readers skip them.
"""
import sys

import pyarrow.dataset as ds

table = ds.dataset(sys.argv[1], format="parquet", partitioning="hive",
                   exclude_invalid_files=False,
                   ignore_prefixes=[".", "_"]).to_table()
names = sorted(table.column_names)
for row in table.select(names).to_pylist():
    print("|".join("" if row[n] is None else str(row[n]) for n in names))
