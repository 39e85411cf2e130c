// Command modbus-sim is a Modbus TCP server that behaves like a small
// boiler, for trying the example gateway's Modbus device without hardware:
//
//	input register 0     water temperature, 0.1 °C (int16), drifting
//	holding register 10  set point, °C
//	coil 0               burner on/off
//
// Run it with `go run ./examples/modbus-sim -listen 127.0.0.1:5020`, then
// the gateway with `-modbus tcp://127.0.0.1:5020`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	mb "github.com/simonvetter/modbus"
)

// boiler is the simulated device's memory.
type boiler struct {
	mu          sync.Mutex
	temperature int16 // 0.1 °C
	setpoint    uint16
	burner      bool
}

func (b *boiler) HandleCoils(req *mb.CoilsRequest) ([]bool, error) {
	if req.Addr != 0 || req.Quantity != 1 {
		return nil, mb.ErrIllegalDataAddress
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if req.IsWrite {
		b.burner = req.Args[0]
	}
	return []bool{b.burner}, nil
}

func (b *boiler) HandleDiscreteInputs(*mb.DiscreteInputsRequest) ([]bool, error) {
	return nil, mb.ErrIllegalDataAddress
}

func (b *boiler) HandleHoldingRegisters(req *mb.HoldingRegistersRequest) ([]uint16, error) {
	if req.Addr != 10 || req.Quantity != 1 {
		return nil, mb.ErrIllegalDataAddress
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if req.IsWrite {
		b.setpoint = req.Args[0]
	}
	return []uint16{b.setpoint}, nil
}

func (b *boiler) HandleInputRegisters(req *mb.InputRegistersRequest) ([]uint16, error) {
	if req.Addr != 0 || req.Quantity != 1 {
		return nil, mb.ErrIllegalDataAddress
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return []uint16{uint16(b.temperature)}, nil
}

// step moves the water temperature towards the set point while the
// burner is on, and lets it cool otherwise.
func (b *boiler) step() {
	b.mu.Lock()
	defer b.mu.Unlock()
	target := int16(150) // 15 °C, the room
	if b.burner {
		target = int16(b.setpoint) * 10
	}
	b.temperature += (target-b.temperature)/20 + int16(rand.IntN(3)-1)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:5020", "Modbus TCP listener")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "modbus-sim:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, listen string, out io.Writer) error {
	b := &boiler{temperature: 150, setpoint: 60, burner: true}
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + listen, Timeout: time.Minute, MaxClients: 16, Logger: log.New(io.Discard, "", 0)}, b)
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	defer srv.Stop()
	fmt.Fprintf(out, "simulated boiler on tcp://%s (unit any)\n", listen)
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			b.step()
		}
	}
}
