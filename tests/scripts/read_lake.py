#!/usr/bin/env python3
"""Read the history lake back with engines independent of the exporter.

pyarrow lists and opens the Parquet objects straight from the S3 API (Hive
partitions site=/date=/hour=), and DuckDB runs the SQL over them. Prints one
JSON array per sample, [site, date, hour, device, point, ts_ms, value,
quality, status], then a last line {"rows": n, "files": n}.

    read_lake.py ENDPOINT BUCKET/PREFIX/samples
"""
import json
import sys

import duckdb
import pyarrow.dataset as ds
import pyarrow.fs as pafs


def main():
    endpoint, root = sys.argv[1], sys.argv[2]
    scheme, _, host = endpoint.partition("://")
    fs = pafs.S3FileSystem(
        access_key="test",
        secret_key="test",
        region="us-east-1",
        endpoint_override=host,
        scheme=scheme,
    )
    dataset = ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive")
    con = duckdb.connect()
    con.register("samples", dataset)
    rows = con.execute(
        """SELECT site, CAST(date AS VARCHAR), CAST(hour AS INTEGER), device, point,
                  epoch_ms(ts), value, quality, status
           FROM samples ORDER BY site, device, point, ts"""
    ).fetchall()
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(list(row)))
        out.write("\n")
    out.write(json.dumps({"rows": len(rows), "files": len(dataset.files)}))
    out.write("\n")


if __name__ == "__main__":
    main()
