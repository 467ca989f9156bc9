package service

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"text/tabwriter"

	"github.com/caarlos0/env/v11"
)

// Version says which build of the program this is: the module version and the VCS revision the
// binary was built from (debug.ReadBuildInfo), e.g. "ingest (devel) 3f2a9c1e… 2026-12-04T10:00:00Z".
func Version(program string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return program + " (no build information)"
	}
	parts := []string{program, info.Main.Version}
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision", "vcs.time":
			parts = append(parts, s.Value)
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified {
		parts = append(parts, "(modified)")
	}
	return strings.Join(append(parts, info.GoVersion), " ")
}

// WriteUsage writes a service's help: what it does, then every environment variable its config
// structs read, with its default, from the structs themselves (so the help cannot drift from them).
func WriteUsage(w io.Writer, about string, configs ...any) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintf(tw, "%s\n\nEnvironment:\n", strings.TrimSpace(about))
	for _, cfg := range configs {
		params, err := env.GetFieldParams(cfg)
		if err != nil {
			return err
		}
		for _, p := range params {
			def := p.DefaultValue
			switch {
			case p.Required:
				def = "(required)"
			case def == "":
				def = "(unset)"
			}
			_, _ = fmt.Fprintf(tw, "  %s\t%s\n", p.Key, def)
		}
	}
	_, _ = fmt.Fprintf(tw, "\nFlags:\n  --help\tthis help\n  --version\tthe build: module version and VCS revision\n")
	return tw.Flush()
}

// HelpOrVersion answers a service's --help (WriteUsage with about and configs) or --version
// (Version) on stdout, and reports whether args asked for either.
func HelpOrVersion(args []string, stdout io.Writer, program, about string, configs ...any) (bool, error) {
	if len(args) != 1 {
		return false, nil
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return true, WriteUsage(stdout, about, configs...)
	case "-version", "--version", "version":
		_, err := fmt.Fprintln(stdout, Version(program))
		return true, err
	}
	return false, nil
}
