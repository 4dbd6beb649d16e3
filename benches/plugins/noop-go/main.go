package main

import (
	"os"

	plugin "taskrush.dev/plugin"
)

func main() {
	p := plugin.New("noop-go", "1.0.0")
	p.BeforeTask(func(ctx plugin.TaskContext) error { return nil })
	p.AfterTask(func(ctx plugin.TaskContext, r plugin.TaskResult) error { return nil })
	if err := p.Run(); err != nil {
		os.Exit(1)
	}
}
