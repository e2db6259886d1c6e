"""`make s3-demo`: the demo against a local S3 server (moto), input and output on s3://.

Starts moto's S3 server on 127.0.0.1, uploads the bundled demo data, embeds it from
s3://dnaembed-demo-corpus/ into s3://dnaembed-demo-embeddings/run/ with the tiny model, prints
the summary and the objects written, and stops the server.
"""

from __future__ import annotations

import os
import socket
import sys

from pipeline.demo import GENOME, READS


def main() -> int:
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("make s3-demo needs the test extras: pip install 'dnaembed[test]'", file=sys.stderr)
        return 2
    from pipeline.compose import compose, to_config
    from pipeline.load.__main__ import summarize
    from pipeline.run import run

    # Throwaway credentials for the local server only; set before Ray starts so its workers
    # inherit them, as they would a node's credentials on a cluster.
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir("dnaembed-demo-corpus")
        fs.mkdir("dnaembed-demo-embeddings")
        fs.put(str(GENOME), "dnaembed-demo-corpus/genomes/NC_045512.2.fasta")
        fs.put(str(READS), "dnaembed-demo-corpus/reads/reads.fastq.gz")
        output = "s3://dnaembed-demo-embeddings/run/"
        cfg = to_config(
            compose(
                [
                    "model=tiny",
                    "input=s3://dnaembed-demo-corpus/*/*",
                    f"output={output}",
                    f"storage.s3.endpoint_url={endpoint}",
                    "window.size=2048",
                    "window.stride=1536",
                    "output.rows_per_shard=16",
                    # Library lines to a file, as the CLI does; the terminal stays quiet.
                    "log.file=outputs/s3-demo/dnaembed.log",
                ]
            )
        )
        run(cfg)
        print(summarize(output, {"s3": {"endpoint_url": endpoint}}))
        fs.invalidate_cache()
        for path in sorted(fs.find("dnaembed-demo-embeddings")):
            print(f"  s3://{path}  {fs.size(path)} bytes")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
