package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadComponentExamples(t *testing.T) {
	for file, mode := range map[string]string{
		"../../examples/component-shared.yaml":   "shared",
		"../../examples/component-extended.yaml": "extended",
		"../../examples/component-queue.yaml":    "queue",
	} {
		props, err := loadComponent(file)
		require.NoError(t, err, file)
		assert.Equal(t, "orders", props["streamName"])
		assert.Equal(t, mode, props["mode"])
		assert.NotEmpty(t, props["consumerName"])
	}
}

func TestLoadComponentExampleByARN(t *testing.T) {
	props, err := loadComponent("../../examples/component-cross-account.yaml")
	require.NoError(t, err)
	assert.Equal(t, "arn:aws:kinesis:eu-west-1:444455556666:stream/orders", props["streamARN"])
	assert.Empty(t, props["streamName"], "the ARN alone names the stream")
	assert.Empty(t, props["region"], "the ARN's region is used")
}

func TestLoadComponentRejectsOtherTypes(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(file, []byte("apiVersion: dapr.io/v1alpha1\nkind: Component\nspec:\n  type: bindings.kafka\n"), 0o600))
	_, err := loadComponent(file)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not a Dapr component of type bindings.aws.kinesis")
}
