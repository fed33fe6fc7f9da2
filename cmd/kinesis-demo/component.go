package main

import (
	"errors"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

const componentType = "bindings.aws.kinesis"

// component is the part of a Dapr component file the demo needs.
type component struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Type     string `yaml:"type"`
		Version  string `yaml:"version"`
		Metadata []struct {
			Name         string `yaml:"name"`
			Value        string `yaml:"value"`
			SecretKeyRef *struct {
				Name string `yaml:"name"`
			} `yaml:"secretKeyRef"`
		} `yaml:"metadata"`
	} `yaml:"spec"`
}

// loadComponent reads a Dapr component file of type bindings.aws.kinesis and returns its metadata
// properties, as daprd would hand them to Init.
func loadComponent(path string) (map[string]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading component file: %w", err)
	}
	var c component
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("parsing component file %s: %w", path, err)
	}
	if c.Kind != "Component" || c.Spec.Type != componentType {
		return nil, fmt.Errorf("%s is not a Dapr component of type %s (kind %q, type %q)", path, componentType, c.Kind, c.Spec.Type)
	}
	props := make(map[string]string, len(c.Spec.Metadata))
	for _, md := range c.Spec.Metadata {
		if md.SecretKeyRef != nil {
			return nil, errors.New("the demo does not resolve secretKeyRef: put the value in the file, or rely on the AWS default credential chain (environment, profile, instance role)")
		}
		props[md.Name] = md.Value
	}
	return props, nil
}
