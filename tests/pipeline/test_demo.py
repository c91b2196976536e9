import json

from lggseg.pipeline.demo import run_demo


def test_demo_writes_every_output_and_segments_well(tmp_path):
    """The shipped model on the bundled sample: Dice 0.90 and 0.93 when this test was written."""
    report = run_demo(tmp_path, log=lambda message: None)
    assert len(report["patients"]) == 2
    for row in report["patients"]:
        folder = tmp_path / row["patient"]
        assert (folder / f"{row['patient']}_summary.png").stat().st_size > 10_000
        assert (folder / f"{row['patient']}_mask.nii.gz").is_file()
        assert len(list((folder / "overlays").glob("*.png"))) == 20
        assert row["dice"] >= 0.85, row
    assert (
        json.loads((tmp_path / "demo.json").read_text())["patients"][0]["patient"] == report["patients"][0]["patient"]
    )
