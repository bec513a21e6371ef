"""The objects of a bucket on an S3-compatible server (moto in the tests), with boto3.

Usage: s3_objects.py ENDPOINT BUCKET create      creates the bucket
       s3_objects.py ENDPOINT BUCKET list        prints each key
       s3_objects.py ENDPOINT BUCKET rows PREFIX  prints the rows of every visible object under
                                                 PREFIX: CSV lines, or Parquet rows (pyarrow)
                                                 or Avro container files' rows (fastavro)
                                                 as CSV lines, each prefixed by its partition
                                                 directories (k=v/)
"""

import io
import sys

import boto3

endpoint, bucket, command = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")


def keys(prefix=""):
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(out)


if command == "create":
    s3.create_bucket(Bucket=bucket)
elif command == "list":
    for k in keys():
        print(k)
elif command == "rows":
    prefix = sys.argv[4]
    for k in keys(prefix):
        parts = k[len(prefix):].strip("/").split("/")
        if any(p.startswith((".", "_")) for p in parts):
            continue
        body = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
        partition = "".join(p + "/" for p in parts[:-1])
        if body[:4] == b"Obj\x01":
            import fastavro
            for row in fastavro.reader(io.BytesIO(body)):
                print(partition + ",".join("" if v is None else str(v) for v in row.values()))
        elif body[:4] == b"PAR1":
            import pyarrow.parquet as pq
            table = pq.read_table(io.BytesIO(body))
            for row in table.to_pylist():
                print(partition + ",".join("" if v is None else str(v) for v in row.values()))
        else:
            for line in body.decode().splitlines():
                print(partition + line)
else:
    sys.exit(f"unknown command {command}")
