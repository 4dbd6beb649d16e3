// @NAME@ is a TaskRush plugin (see README.md).
package main

import (
	"fmt"
	"log"
	"os"
	"strings"

	"taskrush.dev/plugin"
)

func newPlugin() *plugin.Plugin {
	p := plugin.New("@NAME@", "0.1.0")
	// Refuse the tasks the config's `block` list names; log the others.
	p.BeforeTask(func(ctx plugin.TaskContext) error {
		for _, blocked := range ctx.Config.Strings("block") {
			if blocked == ctx.TaskName {
				return plugin.Vetof("`%s` is blocked by @NAME@ (its `block` config)", ctx.TaskName)
			}
		}
		p.Logf("info", "starting %s", ctx.TaskName)
		return nil
	})
	p.AfterTask(func(ctx plugin.TaskContext, result plugin.TaskResult) error {
		p.Logf("info", "%s finished: %s in %d ms", ctx.TaskName, result.Status, result.DurationMs)
		if result.Status == "failed" && result.ExitCode != nil {
			p.Logf("warn", "%s failed with exit code %d", ctx.TaskName, *result.ExitCode)
		}
		return nil
	})
	p.Command("@NAME@", "Say hello (an example command of @NAME@)", func(args []string, cwd string) (plugin.CommandResult, error) {
		words := ""
		for _, a := range args {
			words += " " + a
		}
		return plugin.CommandResult{Stdout: fmt.Sprintf("hello from @NAME@%s\n", words)}, nil
	})
	return p
}

func main() {
	if err := newPlugin().Run(); err != nil {
		log.Print(strings.TrimSpace(err.Error()))
		os.Exit(1)
	}
}
