module taskrush.dev/benches/noop-go

go 1.19

require taskrush.dev/plugin v0.0.0

replace taskrush.dev/plugin => ../../../plugins-external/go
