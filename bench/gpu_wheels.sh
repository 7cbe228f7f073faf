#!/usr/bin/env bash
# Wheels the device machine lacks, for its Python 3.12 (x86-64), into .whl/ (git-ignored):
# PyAV (decoding, audio, the reference path) and PyNvVideoCodec (NVDEC), trimmed of its
# bundled FFmpeg source, samples and benchmarks so that both travel within the 64 MiB limit.
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p .whl
PIP=${PIP:-python3 -m pip}
$PIP download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl "av==18.1.0" "pynvvideocodec==2.2.4"
python3 - <<'PY'
import base64, csv, glob, hashlib, io, os, zipfile
for path in glob.glob(".whl/pynvvideocodec-*.whl"):
    drop = ("samples/", "benchmarks/", ".data/data/external/")
    src = zipfile.ZipFile(path)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        kept = [n for n in src.namelist() if not any(d in n for d in drop)]
        rows = []
        for n in kept:
            if n == record_name:
                continue
            data = src.read(n)
            dst.writestr(n, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append([n, f"sha256={digest}", str(len(data))])
        buf = io.StringIO(); csv.writer(buf, lineterminator="\n").writerows(rows + [[record_name, "", ""]])
        dst.writestr(record_name, buf.getvalue())
    with open(path, "wb") as f:
        f.write(out.getvalue())
    print(path, os.path.getsize(path) // 2**20, "MiB")
PY
du -sh .whl
