package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/accord-saga/accord/sdk/client"
	"github.com/accord-saga/accord/sdk/outbox"
)

// Stopped starts the line relayproc prints at its stage.
const Stopped = "relay: stopped "

func main() {
	dialectName := flag.String("dialect", "sqlite", "sqlite or postgres")
	dsn := flag.String("dsn", "", "the outbox database")
	server := flag.String("server", "", "Accord server URL")
	stage := flag.String("stage", "before", `where to stop: "before" or "after" the publish`)
	flag.Parse()
	if err := run(*dialectName, *dsn, *server, *stage); err != nil {
		fmt.Fprintln(os.Stderr, "relayproc:", err)
		os.Exit(1)
	}
}

func run(dialectName, dsn, server, stage string) error {
	driver, dialect := "sqlite", outbox.SQLite
	if dialectName == outbox.Postgres.String() {
		driver, dialect = "pgx", outbox.Postgres
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	c, err := client.New(server)
	if err != nil {
		return err
	}
	stop := func(context.Context, string, []outbox.Message) error {
		fmt.Println(Stopped + stage)
		select {} // until SIGKILL
	}
	h := outbox.Hooks{BeforePublish: stop}
	if stage == "after" {
		h = outbox.Hooks{AfterPublish: stop}
	}
	r, err := outbox.NewRelay(db, outbox.ClientPublisher(c), outbox.RelayOptions{Dialect: dialect, Hooks: h})
	if err != nil {
		return err
	}
	n, err := r.Flush(context.Background())
	return fmt.Errorf("finished (%d published, %v) without reaching its stage", n, err)
}
