"""A script whose own code fails after parsing its flags."""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--output_dir", default="out")
args = parser.parse_args()
raise ValueError(f"my script is broken (output_dir={args.output_dir})")
