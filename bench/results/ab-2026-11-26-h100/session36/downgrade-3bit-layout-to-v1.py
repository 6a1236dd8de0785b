# A test aid, not part of the product: rewrites a checkpoint's 3-bit qweights from the layout of
# format version 2 to version 1 (the inverse of lut::UpgradeLayoutFromVersion1), so that the CUDA
# engine can be shown to load a version-1 checkpoint to the same results (call 3 and 7 ppl logs).
# v2 -> v1 3-bit high plane (inverse of lut::UpgradeLayoutFromVersion1), pure Python.
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path + "/model.safetensors", "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n]); base = 8 + n
cnt = 0
for name, t in header.items():
    if not name.endswith(".qweight"): continue
    b, e = t["data_offsets"]
    for tile in range(base + b, base + e, 768):
        for lane in range(32):
            o = tile + 512 + 8 * lane
            new = int.from_bytes(data[o:o + 8], "little"); old = 0
            for p in range(32):
                byte = 4 * (p >> 4) + ((p & 7) >> 1); shift = 4 * (p & 1) + 2 * ((p >> 3) & 1)
                old |= ((new >> (8 * byte + shift)) & 3) << (2 * p)
            data[o:o + 8] = old.to_bytes(8, "little")
    cnt += 1
open(path + "/model.safetensors", "wb").write(data)
c = json.load(open(path + "/config.json")); c["quantization_config"]["format_version"] = 1
json.dump(c, open(path + "/config.json", "w"), indent=2)
print("downgraded", cnt, "matrices")
