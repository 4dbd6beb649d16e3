module taskrush.dev/plugin

go 1.19
