"""The Python binding (tools/python/smelt.py) against libsmelt, with the standard library's
unittest: merges from YAML text and from a path, results, progress, plan, verify, inspect and
errors. Needs $SMELT (the CLI, to synthesize models) and the library ($SMELT_LIBRARY)."""

import json
import os
import subprocess
import tempfile
import unittest

import smelt

CLI = os.environ["SMELT"]


class SmeltTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        subprocess.run([CLI, "synth", f"{cls.dir}/base", "--size", "2M", "--seed", "1"], check=True)
        subprocess.run([CLI, "synth", f"{cls.dir}/ft", "--size", "2M", "--base-seed", "1",
                        "--seed", "2"], check=True)
        cls.config = (f"merge_method: linear\nmodels:\n  - model: {cls.dir}/base\n"
                      f"    parameters: {{weight: 0.5}}\n  - model: {cls.dir}/ft\n"
                      f"    parameters: {{weight: 0.5}}\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_merge_from_text_equals_cli(self):
        seen = []
        res = smelt.merge(self.config, f"{self.dir}/py", max_memory="4Mi", threads=1,
                          progress=seen.append)
        self.assertEqual(res["files"], 1)
        self.assertGreater(res["tensors"], 10)
        self.assertEqual(res["bytes_read"], res["bytes_written"] * 2)
        self.assertEqual(len(res["manifest_xxh3"]), 32)
        self.assertTrue(seen and seen[-1]["tensors_done"] == seen[-1]["tensors_total"])
        path = f"{self.dir}/c.yml"
        with open(path, "w") as f:
            f.write(self.config)
        out = subprocess.run([CLI, "merge", path, f"{self.dir}/cli", "-q", "--json"], check=True,
                             capture_output=True, text=True).stdout
        cli = json.loads(out)
        self.assertEqual(cli["manifest_xxh3"], res["manifest_xxh3"])
        self.assertEqual(cli["tensors"], res["tensors"])
        with open(f"{self.dir}/py/model.safetensors", "rb") as a, \
                open(f"{self.dir}/cli/model.safetensors", "rb") as b:
            self.assertEqual(a.read(), b.read())
        # and from a path
        res2 = smelt.merge(path, f"{self.dir}/py2")
        self.assertEqual(res2["manifest_xxh3"], res["manifest_xxh3"])

    def test_sweep_and_batch(self):
        config = self.config.replace("merge_method: linear",
                                     "merge_method: linear\nparameters:\n  normalize: true")
        res = smelt.merge(config, f"{self.dir}/sw", sweep="normalize=true,false")
        one = smelt.merge(self.config, f"{self.dir}/one")
        self.assertEqual(res["bytes_read"], one["bytes_read"])  # one read for both outputs
        self.assertEqual(res["tensors"], 2 * one["tensors"])
        with open(f"{self.dir}/sw/normalize=true/model.safetensors", "rb") as a, \
                open(f"{self.dir}/one/model.safetensors", "rb") as b:
            self.assertEqual(a.read(), b.read())  # weights 0.5 + 0.5: normalizing changes nothing
        self.assertIn("== output 2 of 2: normalize=false (linear)",
                      smelt.plan(config, sweep="normalize=true,false"))
        with open(f"{self.dir}/c_batch.yml", "w") as f:
            f.write(self.config)
        with open(f"{self.dir}/batch.yml", "w") as f:
            f.write("- {config: c_batch.yml, out: b1}\n- {config: c_batch.yml, out: b2}\n")
        res = smelt.merge(None, None, batch=f"{self.dir}/batch.yml")
        self.assertEqual(res["files"], 2)
        with self.assertRaises(smelt.Error):
            smelt.merge(config, f"{self.dir}/bad_sweep", sweep="weight=1,2")

    def test_plan_verify_inspect(self):
        text = smelt.plan(self.config, max_memory="8Mi")
        self.assertIn("method:   linear", text)
        smelt.merge(self.config, f"{self.dir}/v")
        rep = smelt.verify(f"{self.dir}/v")
        self.assertTrue(rep["has_manifest"])
        self.assertEqual(rep["problems"], 0)
        self.assertGreater(rep["tensors_checked"], 10)
        info = smelt.inspect(f"{self.dir}/v")
        self.assertIsInstance(info, dict)
        self.assertIn("model.embed_tokens.weight", json.dumps(info))
        with open(f"{self.dir}/v/model.safetensors", "r+b") as f:
            f.seek(-3, 2)
            b = f.read(1)
            f.seek(-3, 2)
            f.write(bytes([b[0] ^ 1]))
        rep = smelt.verify(f"{self.dir}/v")
        self.assertGreater(rep["problems"], 0)
        self.assertIn("model.safetensors", rep["report"])

    def test_errors(self):
        with self.assertRaises(smelt.Error) as e:
            smelt.merge("merge_method: nosuch\nmodels:\n  - model: x\n", f"{self.dir}/bad")
        self.assertEqual(e.exception.status, "SMELT_E_CONFIG")
        self.assertIn("nosuch", str(e.exception))
        self.assertFalse(os.path.exists(f"{self.dir}/bad/model.safetensors"))
        with self.assertRaises(smelt.Error) as e:
            smelt.merge(self.config, f"{self.dir}/bad2", max_memory="12 apples")
        self.assertEqual(e.exception.status, "SMELT_E_ARG")
        with self.assertRaises(smelt.Error):
            smelt.inspect(f"{self.dir}/missing")

    def test_version_and_tqdm(self):
        self.assertRegex(smelt.version(), r"^\d+\.\d+\.\d+$")
        cb = smelt.tqdm_progress(disable=True)
        self.assertTrue(cb is None or callable(cb))


if __name__ == "__main__":
    unittest.main(verbosity=2)
