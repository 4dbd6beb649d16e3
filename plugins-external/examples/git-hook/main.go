// git-hook runs checks before tasks and vetoes a task when one fails.
//
// Config (global config merged with the task's plugins.git-hook entry):
//
//	commands: {taskname: ["git diff --quiet", ...]}   checks per task name
//	run: ["git diff --quiet", ...]                    checks for this task (per-task config)
//
// Each check runs with `sh -c` in the project root, in order; the first
// one that fails vetoes the task with its exit status and output.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"taskrush.dev/plugin"
)

// maxOutput is how much of a failing check's output the veto message keeps.
const maxOutput = 4000

func newPlugin() *plugin.Plugin {
	p := plugin.New("git-hook", "1.0.0")
	p.BeforeTask(func(ctx plugin.TaskContext) error {
		dir := ctx.WorkingDir
		if dir == "" {
			dir = p.Init().ProjectRoot
		}
		for _, check := range checksFor(ctx) {
			p.Logf("debug", "%s: running `%s`", ctx.TaskName, check)
			if err := runCheck(check, dir); err != nil {
				return plugin.Veto(err.Error())
			}
		}
		return nil
	})
	return p
}

// checksFor is commands.<task> followed by run.
func checksFor(ctx plugin.TaskContext) []string {
	checks := ctx.Config.Map("commands").Strings(ctx.TaskName)
	return append(checks, ctx.Config.Strings("run")...)
}

// runCheck runs one check; the error names it, how it failed and its output.
func runCheck(check, dir string) error {
	cmd := exec.Command("sh", "-c", check)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err == nil {
		return nil
	}
	how := err.Error()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() >= 0 {
		how = fmt.Sprintf("exit code %d", exit.ExitCode())
	}
	msg := fmt.Sprintf("`%s` failed (%s)", check, how)
	if text := strings.TrimSpace(out.String()); text != "" {
		if len(text) > maxOutput {
			text = "…" + text[len(text)-maxOutput:]
		}
		msg += ":\n" + text
	}
	return errors.New(msg)
}

func main() {
	if err := newPlugin().Run(); err != nil {
		fmt.Fprintln(os.Stderr, "git-hook:", err)
		os.Exit(1)
	}
}
