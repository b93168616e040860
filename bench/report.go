package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/flashgate/flashgate/bench/report"
)

func cmdReport(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("report", "report DIR   (re-render DIR/report.html from DIR/result.json)", stdout, stderr)
	if code, stop := parse(fs, fs.Parse, args, stdout); stop {
		return code
	}
	if fs.NArg() != 1 {
		return usageErr(stderr, "report", fmt.Errorf("want exactly one folder holding result.json"))
	}
	dir := fs.Arg(0)
	f, err := report.Read(dir)
	if err != nil {
		return usageErr(stderr, "report", err)
	}
	if filepath.Base(dir) == report.ResultFile {
		dir = filepath.Dir(dir)
	}
	if err := report.Write(dir, f); err != nil {
		return failed(stderr, "report", err)
	}
	abs, _ := filepath.Abs(filepath.Join(dir, report.HTMLFile))
	fmt.Fprintf(stdout, "report: %s\n", abs)
	return exitHeld
}
