package cli

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// flagSet is the flags of one subcommand ("domain add"): its own, and
// --config when it reads the configuration.
type flagSet struct {
	*flag.FlagSet
	config string // --config FILE: "" for the embedded configuration
}

// flags makes the flag set of the subcommand name (as the user types it,
// "domain add"); withConfig adds --config.
func (e *env) flags(name string, withConfig bool) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs.SetOutput(io.Discard)
	if withConfig {
		fs.StringVar(&fs.config, "config", "", "configuration file")
	}
	return fs
}

// jsonFlag adds --json, which list and status subcommands take.
func jsonFlag(fs *flagSet) *bool {
	return fs.Bool("json", false, "print JSON")
}

// parse reads the flags of fs, anywhere among the words as users type
// them, and returns the other words: at least min, at most max (-1: any
// number). An unknown flag, a flag without its value and a stray word are
// errors of one line; -h and --help are flag.ErrHelp.
func (e *env) parse(fs *flagSet, words []string, min, max int) ([]string, error) {
	var args []string
	for {
		if err := fs.Parse(words); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %v (sigillo help %s)", fs.Name(), err, e.cmd.name)
		}
		if err := flagTakenAsValue(fs.FlagSet); err != nil {
			return nil, fmt.Errorf("%s: %w", fs.Name(), err)
		}
		if fs.NArg() == 0 {
			break
		}
		args = append(args, fs.Arg(0))
		words = fs.Args()[1:]
	}
	if max >= 0 && len(args) > max {
		return nil, fmt.Errorf("%s: unexpected argument %q (sigillo help %s)", fs.Name(), args[max], e.cmd.name)
	}
	if len(args) < min {
		return nil, e.usageError()
	}
	return args, nil
}

// flagTakenAsValue catches a string flag given without its value, which
// took the next flag as its value instead: `--quota --password-stdin`.
func flagTakenAsValue(fs *flag.FlagSet) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool || err != nil {
			return
		}
		if v := f.Value.String(); strings.HasPrefix(v, "-") && fs.Lookup(strings.TrimLeft(v, "-")) != nil {
			err = fmt.Errorf("--%s needs a value (it got the flag %s)", f.Name, v)
		}
	})
	return err
}

// configAfter moves a --config FILE given before the next word after it,
// where the subcommand's flags are read: `sigillo --config
// /etc/sigillo.toml domain list`, `sigillo domain --config FILE list`.
func configAfter(words []string) []string {
	if len(words) == 0 {
		return words
	}
	switch a := words[0]; {
	case (a == "--config" || a == "-config") && len(words) >= 3:
		return append(append([]string{words[2]}, words[3:]...), a, words[1])
	case (strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config=")) && len(words) >= 2:
		return append(append([]string{words[1]}, words[2:]...), a)
	}
	return words
}

// report is the shape of the commands that show what the server reports
// (`queue list`, `scan status`, `cert status`): it checks the subcommand,
// then does what fetch does.
func (e *env) report(words []string, noun, sub, method string, out any) (done bool, err error) {
	if s, _ := first(words); s != sub {
		return false, e.usageError()
	}
	return e.fetch(noun+" "+sub, words[1:], 0, method, "", out)
}

// fetch parses name's flags (--json and --config) and at most one
// argument when param names it (at most none otherwise), fills out with
// the control socket's answer to method, and with --json prints it and
// says done.
func (e *env) fetch(name string, words []string, maxArgs int, method, param string, out any) (done bool, err error) {
	fs := e.flags(name, true)
	asJSON := jsonFlag(fs)
	args, err := e.parse(fs, words, 0, maxArgs)
	if err != nil {
		return false, err
	}
	cfg, err := e.config(fs, false)
	if err != nil {
		return false, err
	}
	var a map[string]string
	if param != "" && len(args) == 1 {
		a = map[string]string{param: args[0]}
	}
	if err := call(cfg, method, a, out); err != nil {
		return false, err
	}
	if *asJSON {
		return true, json.NewEncoder(e.stdout).Encode(out)
	}
	return false, nil
}
